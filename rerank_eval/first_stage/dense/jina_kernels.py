"""Faster execution of transformers' `JinaEmbeddingsV3Model` (jina-embeddings-v3's backbone) on a GPU.

Profiled on an H200 (2026-11-30; xlm-roberta-large shape, bf16, BEIR-like lengths, transformers'
own modules): the rotary embedding as transformers runs it (multiply, negate, concatenate and add,
each a strided pass over transposed views) took 35% of the GPU's time, as much as every matrix
product together; each forward pass waited once for the GPU (transformers asks the device whether
any token is padded, to drop the mask). Three changes to how the modules run, none to the function
they compute:

- the rotary embedding of queries and keys as one compiled kernel, on the (tokens, heads, d) layout
  the projections produce, written so that nothing in it is realised in between
  (`compiling.rotary`);
- each residual add with the LayerNorm after it as one compiled kernel;
- the padding mask handed over in transformers' own 4-d form (boolean, expanded without a copy),
  which transformers passes on unchecked, so the host never waits for the GPU (SDPA still turns it
into a float mask in each layer, a small kernel).

With `packed_sequences` (by default on CUDA, `kernel_choice.packing_chosen`), a batch's texts run
end to end in one row, positions restarting at each text, and attention stays within each text
through torch's varlen kernel (FlashAttention's): no padded position runs, no attention plan is
made per shape.

Otherwise attention stays SDPA's choice (cuDNN on Hopper): it plans each new batch shape once
(about 1 s over the first 8,000 passages, which `bench-encode --second-pass` separates out), then
ran 1.9× faster than the memory-efficient kernel (0.26 s against 0.50 s for those passages on an
H200).

The compiled kernels do the same arithmetic in another order and round once where eager rounds
after each step: in float32 within 1e-5 of transformers' modules, in bfloat16 no farther from
float32 than transformers' modules are (both tested on a CPU). `use_fused_modules(model, False)`
switches back.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rerank_eval import compiling

MODEL_TYPE = "jina_embeddings_v3"


def fusable_config(folder: Path) -> Any | None:
    """The transformers config of the checkpoint in `folder` if it is a `JinaEmbeddingsV3Model`
    (by its model_type; defaults filled in), else None. A config that cannot be read is None here:
    loading the model reports it, in one line."""
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("model_type") != MODEL_TYPE:
            return None
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(folder))
    except Exception:  # unreadable, malformed, or refused by transformers in many ways
        return None


def padding_mask_4d(mask: torch.Tensor) -> torch.Tensor:
    """(batch, 1, tokens, tokens) booleans, True where a key is a real token: what transformers'
    `create_bidirectional_mask` builds from a 2-d mask, here without asking the GPU for anything."""
    batch, tokens = mask.shape
    return mask.bool()[:, None, None, :].expand(batch, 1, tokens, tokens)


@dataclass(frozen=True)
class Packing:
    """Texts laid end to end in one row without padding (`packed_sequences`): `starts` holds the
    cumulative lengths (0, n1, n1+n2, ...) as int32 on the device, `bounds` the same on the host."""

    starts: torch.Tensor
    bounds: tuple[int, ...]

    @functools.cached_property
    def longest(self) -> int:  # cached: every layer asks
        return max(b - a for a, b in zip(self.bounds, self.bounds[1:]))


@dataclass(frozen=True)
class PackedRows:
    """Token rows laid end to end (host tensors): ids and positions (1, tokens), positions
    restarting at 0 for each text as in a padded batch (rotary attention depends only on relative
    positions, but the float32 angles of positions in the tens of thousands would round worse);
    `starts` (int32) and `bounds` the cumulative lengths."""

    ids: torch.Tensor
    positions: torch.Tensor
    starts: torch.Tensor
    bounds: tuple[int, ...]


def pack(rows: Sequence[Sequence[int]]) -> PackedRows:
    """`rows` end to end, built by numpy at C speed: a batch holds tens of thousands of tokens, and
    the host must lay them out faster than the GPU runs them."""
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    bounds = np.concatenate(([0], np.cumsum(lengths)))
    tokens = int(bounds[-1])
    ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=tokens)
    positions = np.arange(tokens) - np.repeat(bounds[:-1], lengths)
    return PackedRows(
        ids=torch.from_numpy(ids)[None],
        positions=torch.from_numpy(positions)[None],
        starts=torch.from_numpy(bounds.astype(np.int32)),
        bounds=tuple(bounds.tolist()),
    )


def packed_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, packing: Packing, scale: float
) -> torch.Tensor:
    """Bidirectional attention within each packed text, on (tokens, heads, d) states. On CUDA,
    FlashAttention's varlen kernel as torch ships it; elsewhere SDPA text by text, which is what the
    kernel computes and what its trial is held to.

    The kernel is called as aten's operator, which `torch.nn.attention.varlen.varlen_attn` wraps in
    a Python custom operator: on an H200 that wrapper took about a millisecond of host time per
    call (24 per forward pass), enough with the rest to keep the GPU waiting for the host (probed
    2026-12-04); the kernel and its arguments are the same."""
    if query.device.type == "cuda":
        return varlen_kernel(query, key, value, packing, scale)
    out = torch.empty_like(query)
    for start, end in zip(packing.bounds, packing.bounds[1:]):
        states = (t[start:end].transpose(0, 1) for t in (query, key, value))
        out[start:end] = nn.functional.scaled_dot_product_attention(*states, scale=scale).transpose(0, 1)
    return out


def varlen_kernel(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, packing: Packing, scale: float
) -> torch.Tensor:
    """FlashAttention's varlen kernel through aten's operator (CUDA; meta tensors take its shapes,
    which is how a CPU test holds the call to the operator's schema)."""
    longest, starts = packing.longest, packing.starts
    # positional, in the schema's order: dropout 0, not causal, no debug mask
    return torch.ops.aten._flash_attention_forward(
        query, key, value, starts, starts, longest, longest, 0.0, False, False, scale=scale
    )[0]


def _rotated_pair(
    query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, heads, d) query and key states rotated by (tokens, d) cos and sin (transformers'
    `apply_rotary_pos_emb`, as `compiling.rotary` writes it)."""
    return compiling.rotary(query, cos, sin), compiling.rotary(key, cos, sin)


def _added_layer_norm(
    states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    return nn.functional.layer_norm(states + residual, (states.shape[-1],), weight, bias, eps)


def _add_norm(norm: nn.LayerNorm, states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """LayerNorm(states + residual) as one kernel, on (tokens, hidden) rows. The weights go in
    detached: whether a checkpoint's parameters need grad (PEFT freezes them) is then no reason to
    compile again."""
    weight, bias = norm.weight.detach(), norm.bias.detach()
    added = compiling.compiled(_added_layer_norm)(
        states.flatten(0, -2), residual.flatten(0, -2), weight, bias, norm.eps
    )
    return added.view(states.shape)


@functools.cache
def _fused_classes() -> tuple[type[nn.Module], type[nn.Module]]:
    from transformers.models.jina_embeddings_v3.modeling_jina_embeddings_v3 import (
        JinaEmbeddingsV3Attention,
        JinaEmbeddingsV3Layer,
    )

    class FusedJinaEmbeddingsV3Attention(JinaEmbeddingsV3Attention):
        """The attention with queries' and keys' rotary embedding as one kernel (inference only), and
        with `packing`, over texts packed end to end."""

        def forward(
            self,
            hidden_states: torch.Tensor,
            attention_mask: torch.Tensor | None = None,
            position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
            packing: Packing | None = None,
            **kwargs: Any,
        ) -> tuple[torch.Tensor, None]:
            batch, tokens = hidden_states.shape[:2]
            rows = (batch * tokens, -1, self.head_dim)
            cos, sin = (t.expand(batch, -1, -1).reshape(batch * tokens, -1) for t in position_embeddings)
            query, key = compiling.compiled(_rotated_pair)(
                self.q_proj(hidden_states).view(rows), self.k_proj(hidden_states).view(rows), cos, sin
            )
            if packing is not None:  # one row of texts end to end
                value = self.v_proj(hidden_states).view(rows)
                output = packed_attention(query, key, value, packing, self.scaling)
                return self.o_proj(output.reshape(batch, tokens, -1)), None
            shape = (batch, tokens, -1, self.head_dim)
            query, key = query.view(shape).transpose(1, 2), key.view(shape).transpose(1, 2)
            value = self.v_proj(hidden_states).view(shape).transpose(1, 2)
            output = nn.functional.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, scale=self.scaling
            )
            return self.o_proj(output.transpose(1, 2).reshape(batch, tokens, -1)), None

    class FusedJinaEmbeddingsV3Layer(JinaEmbeddingsV3Layer):
        """The layer with each residual add and its LayerNorm as one kernel (inference: no dropout)."""

        def forward(
            self,
            hidden_states: torch.Tensor,
            attention_mask: torch.Tensor | None = None,
            position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
            packing: Packing | None = None,
            **kwargs: Any,
        ) -> torch.Tensor:
            attended, _ = self.self_attn(
                hidden_states,
                attention_mask=attention_mask,
                position_embeddings=position_embeddings,
                packing=packing,
            )
            hidden_states = _add_norm(self.post_attention_layernorm, attended, hidden_states)
            return _add_norm(self.post_mlp_layernorm, self.mlp(hidden_states), hidden_states)

    return FusedJinaEmbeddingsV3Attention, FusedJinaEmbeddingsV3Layer


def use_fused_modules(model: nn.Module, fused: bool) -> int:
    """Switch every attention and layer module of a JinaEmbeddingsV3 model (PEFT-wrapped or not) to
    the fused one or back to transformers' own; returns how many layers were switched."""
    from transformers.models.jina_embeddings_v3.modeling_jina_embeddings_v3 import (
        JinaEmbeddingsV3Attention,
        JinaEmbeddingsV3Layer,
    )

    attention_class, layer_class = _fused_classes()
    layers = 0
    for module in model.modules():
        if isinstance(module, JinaEmbeddingsV3Attention):
            module.__class__ = attention_class if fused else JinaEmbeddingsV3Attention
        elif isinstance(module, JinaEmbeddingsV3Layer):
            module.__class__ = layer_class if fused else JinaEmbeddingsV3Layer
            layers += 1
    return layers


def compile_failure(config: Any, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why the two kernels cannot be compiled here (no C compiler, a GPU Triton does not support),
    in one line; None when both compile and run on a few tokens of the model's sizes.

    Called before the model is loaded, so that what a run records (and its cache key) is what runs.
    The tensors are made as encoding makes them (states in inference mode, weights outside it and
    not needing grad, see `_add_norm`), so that encoding reuses these kernels rather than compiling
    again (tested on a CPU)."""

    def tensor(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, device=device, dtype=dtype)

    def trial() -> None:  # sizes that cannot work (no heads) fail in it too, in one line
        heads, hidden = int(config.num_attention_heads), int(config.hidden_size)
        size, eps = hidden // heads, float(config.layer_norm_eps)
        with torch.inference_mode(False):  # as the model's weights: not inference tensors
            weight, bias = tensor(hidden), tensor(hidden)
        rows = compiling.TRIAL_ROWS
        states, cos, sin = tensor(rows, heads, size), tensor(rows, size), tensor(rows, size)
        compiling.compiled(_rotated_pair)(states, states.clone(), cos, sin)
        added = tensor(rows, hidden)
        compiling.compiled(_added_layer_norm)(added, added.clone(), weight, bias, eps)

    return compiling.trial_failure(trial, device)


#: in the corpus cache's key where the fused kernels run; bumped when their arithmetic changes
#: (2: widths compiled as constants, 2026-12-04: reductions sum in another order than before)
FUSED_KERNELS_VERSION = 2

#: how far torch's varlen kernel may be from SDPA text by text in the trial (bf16 rounds at 4e-3)
PACKED_TRIAL_TOLERANCE = 5e-2


def packing_failure(config: Any, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why attention over packed texts cannot run here (this torch has no varlen kernel, the GPU or
    dtype is not one FlashAttention supports) or gives other values than SDPA text by text, in one
    line; None when it runs and agrees. On a CPU the packed attention is SDPA text by text."""
    heads, hidden = int(config.num_attention_heads), int(config.hidden_size)
    size = hidden // heads
    bounds = (0, 3, 10, 11)
    generator = torch.Generator().manual_seed(0)
    states = [torch.randn(bounds[-1], heads, size, generator=generator) for _ in range(3)]
    got: list[torch.Tensor] = []

    def trial() -> None:  # a missing module, an unsupported GPU or dtype fail in it, in one line
        on_device = [t.to(device=device, dtype=dtype) for t in states]
        starts = torch.tensor(bounds, dtype=torch.int32, device=device)
        got.append(packed_attention(*on_device, Packing(starts, bounds), size**-0.5).float().cpu())

    failure = compiling.trial_failure(trial, device)
    if failure:
        return failure
    reference = packed_attention(*states, Packing(torch.tensor(bounds), bounds), size**-0.5)
    difference = float((got[0] - reference).abs().max())
    if not difference <= PACKED_TRIAL_TOLERANCE:
        return f"the varlen kernel differs from SDPA by {difference:.3g} on a trial input"
    return None
