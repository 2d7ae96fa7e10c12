"""How blocks are executed: grouped into batches under a token budget, laid out as padded rows or
packed into one row with their boundaries, run through the backbone (only the positions read
reach the last layer), and projected. Scores never depend on this grouping beyond float rounding.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rerank_eval.models.common import (
    packed_batches,
    right_padded,
    rounded_up,
    to_device,
    token_budget_batches,
)
from rerank_eval.models.weights_fit import check_token_ids_fit
from rerank_eval.rerankers.listwise.model import (
    VARLEN_ATTENTIONS,
)
from rerank_eval.rerankers.listwise.qwen3_kernels import (
    last_layer_at,
)


@dataclass
class Block:
    request: int
    query_id: str
    docs: range
    input_ids: list[int]
    markers: list[int]  # where the last hidden state is read: each document's marker, the query's


@dataclass
class ForwardInputs:
    """One forward pass's tensors on the device: token ids, the positions read (rows, kept), and
    for packed blocks each read position's block start, the token positions and block boundaries."""

    input_ids: torch.Tensor
    keep: torch.Tensor
    starts: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    boundaries: dict[str, Any] = field(default_factory=dict)


class BlockExecution:
    """The forward passes of `ListwiseLastToken` (a mixin: it reads the reranker's backbone,
    projector, settings and statistics)."""

    def _batches(self, blocks: list[Block]) -> list[list[Block]]:
        """Batches within the token budget: blocks in order whose lengths add up to it when packed,
        else length-sorted ones whose padded size (rows × longest, rounded up) stays within it."""
        budget = self.settings.max_batch_tokens
        if self.settings.pack_blocks:
            groups = packed_batches([len(b.input_ids) for b in blocks], budget, self.settings.pad_multiple)
        else:
            lengths = [rounded_up(len(b.input_ids), self.settings.pad_multiple) for b in blocks]
            groups = token_budget_batches(lengths, budget)
        return [[blocks[i] for i in group] for group in groups]

    @torch.inference_mode()
    def _launch(self, batch: list[Block]) -> torch.Tensor:
        """Queue the batch's forward pass and projection; returns the projected vectors at each
        block's markers, (blocks, markers, width) on the device, still being computed on a GPU."""
        # each block's marker positions, padded by repeating its last one (read, then ignored)
        width = max(len(b.markers) for b in batch)
        markers = [b.markers + b.markers[-1:] * (width - len(b.markers)) for b in batch]
        # what an out-of-memory error is told of: this batch, before anything goes to the device
        self._last_batch_blocks = len(batch)
        self._last_block_tokens = max(len(b.input_ids) for b in batch)
        self._last_block_query = batch[0].query_id
        self.before_forward()
        named = f"model {self.checkpoint.source}"
        check_token_ids_fit([b.input_ids for b in batch], self.backbone, named, "a block")
        inputs = self._packed(batch, markers) if self.settings.pack_blocks else self._padded(batch, markers)
        self._stats["forward_passes"] += 1
        self._stats["largest_batch_blocks"] = max(self._stats["largest_batch_blocks"], len(batch))
        # use_cache=False: no key/value cache is built (it would hold every layer's keys and values).
        if self.settings.trim_last_layer:
            with last_layer_at(self.backbone, inputs.keep, inputs.starts):
                hidden = self._forward(inputs)
        else:
            rows = torch.arange(inputs.keep.shape[0], device=self.device)[:, None]
            hidden = self._forward(inputs)[rows, inputs.keep]
        return self.projector(hidden.float()).view(len(batch), width, -1)

    def _padded(self, batch: list[Block], markers: list[list[int]]) -> ForwardInputs:
        """One row per block, right-padded. No attention mask: under causal attention no real token
        sees the padding placed after it, so the plain causal kernel (FlashAttention/SDPA
        is_causal) gives every real position the value it has alone."""
        input_ids, _ = right_padded(
            [b.input_ids for b in batch], pad_id=0, multiple=self.settings.pad_multiple
        )
        keep = torch.tensor(markers)
        rows, width = input_ids.shape
        return ForwardInputs(
            to_device(input_ids, self.device),
            to_device(keep, self.device),
            boundaries=self._boundaries([width] * rows),
        )

    def _packed(self, batch: list[Block], markers: list[list[int]]) -> ForwardInputs:
        """Every block in one row, each with its own positions from 0. A FlashAttention kernel is
        given the blocks' boundaries (cumulative lengths, computed here on the host, so nothing
        waits for the GPU); any other attention gets transformers' block-diagonal causal mask,
        which it builds from the positions. The trimmed last layer is given each marker's block
        start, so its markers never see an earlier block."""
        lengths = [len(b.input_ids) for b in batch]
        offsets = list(itertools.accumulate(lengths, initial=0))
        keep = torch.tensor([[offset + m for offset, row in zip(offsets, markers) for m in row]])
        starts = torch.tensor([[offset for offset, row in zip(offsets, markers) for _ in row]])
        # the row rounded up to pad_multiple by one more sequence of padding (read by nobody), so
        # that kernels planned per length (the trimmed layer's masked attention) meet fewer lengths
        padding = rounded_up(offsets[-1], self.settings.pad_multiple) - offsets[-1]
        if padding:
            lengths = [*lengths, padding]
        ids = torch.tensor([[token for b in batch for token in b.input_ids] + [0] * padding])
        positions = torch.cat([torch.arange(n) for n in lengths])[None]
        return ForwardInputs(
            *(to_device(t, self.device) for t in (ids, keep, starts, positions)),
            boundaries=self._boundaries(lengths),
        )

    def _boundaries(self, lengths: list[int]) -> dict[str, Any]:
        """FlashAttention's varlen arguments for sequences of these lengths laid end to end, made
        on the host so that nothing waits for the GPU (given none, transformers reads positions on
        the host to look for packed sequences); none for attention without varlen kernels."""
        if self.attention not in VARLEN_ATTENTIONS:
            return {}
        cumulative = torch.tensor(list(itertools.accumulate(lengths, initial=0)), dtype=torch.int32)
        cumulative = to_device(cumulative, self.device)
        longest = max(lengths)
        return {"cu_seq_lens_q": cumulative, "cu_seq_lens_k": cumulative,
                "max_length_q": longest, "max_length_k": longest}  # fmt: skip

    def _forward(self, inputs: ForwardInputs) -> torch.Tensor:
        """The backbone's last hidden state, without waiting for the GPU.

        Given no mask, transformers looks for sequences packed in a row by reading a GPU tensor on
        the host, which waits for every queued forward pass. So masks are passed ready-made where
        every layer's is "none": with FlashAttention (the sequence boundaries and any sliding
        window go to its kernels instead), and for right-padded rows without sliding-window layers
        (causal). Transformers builds them only for sliding windows under SDPA, and for blocks
        packed without FlashAttention, whose block-diagonal mask comes from the positions.
        """
        layer_types = set(self.backbone.config.layer_types)
        if self.attention in VARLEN_ATTENTIONS:
            masks = dict.fromkeys(layer_types)
        elif inputs.positions is not None or "sliding_attention" in layer_types:
            masks = None
        else:
            masks = {"full_attention": None}
        return self.backbone(
            input_ids=inputs.input_ids,
            position_ids=inputs.positions,
            attention_mask=masks,
            use_cache=False,
            **inputs.boundaries,
        ).last_hidden_state

    @staticmethod
    def _collect(batch: list[Block], projected: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
        """(document vectors, query vector) of each block, copied to the host (waits for the GPU)."""
        vectors = projected.cpu().numpy()
        return [(vectors[row, : len(b.docs)], vectors[row, len(b.docs)]) for row, b in enumerate(batch)]

    def _block_vectors(self, blocks: list[Block]) -> Iterator[tuple[Block, tuple[np.ndarray, np.ndarray]]]:
        """Every block with its vectors, batch by batch. Each batch is queued before the previous
        one's vectors are copied back (which waits for the GPU), so that on a GPU the next forward
        pass is already queued when one ends instead of waiting for the host."""
        previous: tuple[list[Block], torch.Tensor] | None = None
        for batch in self._batches(blocks):
            current = (batch, self._launch(batch))
            if previous:
                yield from zip(previous[0], self._collect(*previous))
            previous = current
        if previous:
            yield from zip(previous[0], self._collect(*previous))
