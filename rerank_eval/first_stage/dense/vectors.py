"""Vectors out of an encoder's hidden states: pooled as the recipe says, then on their way back to
the host without making the host wait for anything queued after them."""

from __future__ import annotations

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
    so the same bits on every run (an accumulating scatter would not give them). Every group's
    indices go to the device in one copy (`_layouts`)."""
    vectors = hidden.new_empty((len(bounds) - 1, hidden.shape[-1]), dtype=torch.float32)
    layouts, packed = _layouts(np.asarray(bounds, dtype=np.int64), budget, multiple)
    on_device = to_device(torch.from_numpy(packed), hidden.device)
    for layout in layouts:
        sources, places, mask, group = (on_device[start:end] for start, end in layout.spans)
        laid_out = hidden.new_zeros(layout.rows * layout.width, hidden.shape[-1])
        laid_out.index_copy_(0, places, hidden[sources])
        pooled = pool(laid_out.view(layout.rows, layout.width, -1), mask.view(layout.rows, -1), pooling)
        vectors.index_copy_(0, group, pooled)
    return vectors


@dataclass(frozen=True)
class _Layout:
    """One group of `pool_packed`: its texts × `width` padded positions, and where its source
    tokens, their places, its mask and its text indices lie in the copied index array."""

    rows: int
    width: int
    spans: tuple[tuple[int, int], ...]


def _layouts(bounds: np.ndarray, budget: int, multiple: int) -> tuple[list[_Layout], np.ndarray]:
    """Each group's layout and all their int64 indices in one array: a group's source tokens
    (each text's, in group order), the places they are copied to (text k of the group at
    k × width), its mask (rows × width, 1 on real tokens) and its texts' indices."""
    lengths = np.diff(bounds)
    layouts, parts, offset = [], [], 0
    for group in token_budget_batches([rounded_up(int(n), multiple) for n in lengths], budget):
        members = np.asarray(group, dtype=np.int64)
        counts = lengths[members]
        width = rounded_up(int(counts.max()), multiple)
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        sources = np.repeat(bounds[members], counts) + within
        places = np.repeat(np.arange(len(members)) * width, counts) + within
        mask = (np.arange(width)[None] < counts[:, None]).astype(np.int64).ravel()
        spans = []
        for part in (sources, places, mask, members):
            spans.append((offset, offset + len(part)))
            offset += len(part)
        parts += [sources, places, mask, members]
        layouts.append(_Layout(len(members), width, tuple(spans)))
    return layouts, np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


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
