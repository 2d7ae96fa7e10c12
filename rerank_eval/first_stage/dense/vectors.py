"""Vectors out of an encoder's hidden states: pooled as the recipe says, then on their way back to
the host without making the host wait for anything queued after them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


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
        if not self.order:
            return np.empty((0, 0), dtype=np.float32)
        if self.copied is not None:
            self.copied.synchronize()
        vectors = self.host.numpy()
        out = np.empty_like(vectors)
        out[self.order] = vectors
        return out
