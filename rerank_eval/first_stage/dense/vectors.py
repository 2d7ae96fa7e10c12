"""Vectors out of an encoder's hidden states: pooled as the recipe says, then on their way back to
the host without making the host wait for anything queued after them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rerank_eval.models.common import rounded_up, to_device, token_budget_batches


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per row of right-padded hidden states (float32)."""
    hidden = hidden.float()
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "lasttoken":
        last = mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "max":
        return hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def pool_packed(
    hidden: torch.Tensor, bounds: Sequence[int], pooling: str, budget: int, multiple: int
) -> torch.Tensor:
    """One vector per text of a packed row of hidden states (tokens, hidden), text i being
    tokens bounds[i]:bounds[i + 1]: what `pool` gives for the same texts right-padded to a multiple
    of `multiple`. The texts are laid out padded a group at a time, each group within `budget`
    positions as a padded batch would be (one layout of a whole packed batch, many short texts
    beside a long one, would need far more memory than its budget), by copies to distinct places,
    so the same bits on every run (an accumulating scatter would not give them)."""
    lengths = [end - start for start, end in itertools.pairwise(bounds)]
    vectors = hidden.new_empty((len(lengths), hidden.shape[-1]), dtype=torch.float32)
    for group in token_budget_batches([rounded_up(n, multiple) for n in lengths], budget):
        width = rounded_up(max(lengths[i] for i in group), multiple)
        sources = torch.cat([torch.arange(bounds[i], bounds[i + 1]) for i in group])
        places = torch.cat([torch.arange(lengths[i]) + k * width for k, i in enumerate(group)])
        mask = torch.arange(width)[None] < torch.tensor([lengths[i] for i in group])[:, None]
        laid_out = hidden.new_zeros(len(group) * width, hidden.shape[-1])
        laid_out.index_copy_(0, to_device(places, hidden.device), hidden[to_device(sources, hidden.device)])
        pooled = pool(laid_out.view(len(group), width, -1), to_device(mask.long(), hidden.device), pooling)
        vectors.index_copy_(0, to_device(torch.tensor(group), hidden.device), pooled)
    return vectors


@dataclass
class QueuedVectors:
    """The vectors of one `queue_tokens` call, in the order their batches ran, on their way to the
    host: on CUDA a copy into pinned memory queued behind the batches, and the event that marks its
    end (waiting for it does not wait for whatever was queued later)."""

    order: list[int]  # the input row of each vector
    host: torch.Tensor
    copied: torch.cuda.Event | None

    @classmethod
    def copied_back(cls, order: list[int], vectors: torch.Tensor) -> QueuedVectors:
        """`vectors` on their way to the host. On CUDA the copy and its event go on the stream of
        the vectors' own GPU (not the current device's, which may be another); the event blocks
        rather than spins when waited for, so a waiting thread leaves its core to the others."""
        if vectors.device.type != "cuda":
            return cls(order, vectors.cpu(), None)
        with torch.cuda.device(vectors.device):
            host = torch.empty(vectors.shape, dtype=vectors.dtype, pin_memory=True)
            host.copy_(vectors, non_blocking=True)
            copied = torch.cuda.Event(blocking=True)
            copied.record(torch.cuda.current_stream(vectors.device))
        return cls(order, host, copied)

    def result(self) -> np.ndarray:
        """Float32 vectors in input order (waits for the device to finish these batches only)."""
        if self.copied is not None:
            self.copied.synchronize()
        vectors = self.host.numpy()
        out = np.empty_like(vectors)
        out[self.order] = vectors
        return out
