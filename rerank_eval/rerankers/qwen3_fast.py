"""Faster execution of a transformers Qwen3 backbone that is read at a few positions only.

The listwise reranker reads the last hidden state at ~100 marker tokens of prompts thousands of
tokens long. Three changes to how transformers' modules run, none to what they compute:

- `use_fused_rms_norm`: every RMSNorm as one kernel instead of six elementwise passes;
- `use_trimmed_last_layer` + `last_layer_at`: the last decoder layer computes its output at the
  read positions only (its keys and values still come from every position);
- `causal_sdpa_repeated_kv`: float32 attention on CUDA that keeps a memory-efficient kernel.

Each can be switched back to transformers' own module, which is what the benchmark's
reference-style path runs.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

# float32 on CUDA: SDPA's fused kernels that take float32 do not take grouped key/value heads, so
# with them PyTorch falls back to the math kernel, which materialises every n × n score matrix
# (about 28 GB per 21k-token prompt). Repeating the key/value heads first keeps the memory-efficient
# kernel. Only for this model's calls, which never carry a padding mask.
REPEATED_KV_SDPA = "sdpa_causal_repeated_kv"


def causal_sdpa_repeated_kv(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal SDPA with key/value heads repeated to the query heads (transformers' interface)."""
    if attention_mask is not None:
        raise ValueError(f"{REPEATED_KV_SDPA} is for unpadded or right-padded causal batches, without a mask")
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    output = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, is_causal=query.shape[2] > 1, scale=scaling
    )
    return output.transpose(1, 2).contiguous(), None


def register_repeated_kv_attention() -> str:
    """Make `REPEATED_KV_SDPA` an attention implementation transformers knows; returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(REPEATED_KV_SDPA, causal_sdpa_repeated_kv)
    AttentionMaskInterface.register(REPEATED_KV_SDPA, sdpa_mask)
    return REPEATED_KV_SDPA


# -- RMSNorm ---------------------------------------------------------------------------------------


@functools.cache
def _fused_rms_norm_class() -> type[nn.Module]:
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    class FusedQwen3RMSNorm(Qwen3RMSNorm):
        """Qwen3RMSNorm as one kernel (torch.rms_norm) instead of six elementwise passes."""

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            return nn.functional.rms_norm(
                hidden_states, (hidden_states.shape[-1],), self.weight, self.variance_epsilon
            )

    return FusedQwen3RMSNorm


def use_fused_rms_norm(backbone: nn.Module, fused: bool) -> int:
    """Switch every Qwen3 RMSNorm of the backbone to the fused kernel or back; returns how many.

    transformers' RMSNorm upcasts, squares, averages, adds, multiplies and casts back, one GPU pass
    each: on an H200 (profiled 2026-11-26) those passes took 26-38% of a forward pass's GPU time,
    more than the matrix products. The fused kernel does the same float32 arithmetic, summation
    order aside (the product with the weight in float32 too, so in bfloat16 the result is rounded
    once where transformers rounds twice).
    """
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    fused_class = _fused_rms_norm_class()
    norms = [m for m in backbone.modules() if isinstance(m, Qwen3RMSNorm)]
    for norm in norms:
        norm.__class__ = fused_class if fused else Qwen3RMSNorm
    return len(norms)


# -- the last layer at the read positions only -------------------------------------------------------


def _rotated(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of (batch, heads, tokens, head_dim) states; cos/sin (batch, tokens, head_dim)."""
    from transformers.models.qwen3.modeling_qwen3 import rotate_half

    return states * cos.unsqueeze(1) + rotate_half(states) * sin.unsqueeze(1)


def _allowed_keys(
    keep: torch.Tensor, length: int, attention_mask: torch.Tensor | None, window: int | None
) -> torch.Tensor:
    """(batch, kept, keys) mask of what each kept position attends to: the rows of the layer's own
    4-d mask when transformers built one, else causal (and within the sliding window, if any)."""
    batch = keep.shape[0]
    if attention_mask is not None:
        if attention_mask.dim() != 4:
            raise ValueError("the trimmed last layer takes no padding mask (right padding needs none)")
        rows = torch.arange(batch, device=keep.device)[:, None]
        return attention_mask[:, 0].expand(batch, -1, -1)[rows, keep]
    keys = torch.arange(length, device=keep.device)[None, None, :]
    allowed = keys <= keep[:, :, None]
    if window:
        allowed &= keep[:, :, None] - keys < window
    return allowed


def _grouped_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor, scaling: float
) -> torch.Tensor:
    """SDPA of (batch, heads, kept, d) queries on (batch, kv_heads, n, d) keys and values.

    The query heads sharing a key/value head are stacked along the query axis instead of repeating
    keys and values (the heads of a group are consecutive, as in transformers' repeat_kv), so any
    SDPA kernel that takes a mask applies, without copying n-long tensors.
    """
    batch, heads, kept, size = query.shape
    groups = heads // key.shape[1]
    stacked = query.reshape(batch, key.shape[1], groups * kept, size)
    mask = allowed.repeat(1, groups, 1).unsqueeze(1)
    output = nn.functional.scaled_dot_product_attention(stacked, key, value, attn_mask=mask, scale=scaling)
    return output.reshape(batch, heads, kept, size)


@functools.cache
def _trimmed_layer_class() -> type[nn.Module]:
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer

    class TrimmedQwen3DecoderLayer(Qwen3DecoderLayer):
        """A decoder layer that, while `keep` is set, returns its output at those positions only.

        Keys and values come from every position, exactly as in the full layer; the queries, the
        output projection, the MLP and the residuals run for the kept positions alone. As the last
        layer this saves 1/L of the model's work (half of it for a 2-layer model) and the final
        norm runs on the kept positions too.
        """

        keep: torch.Tensor | None = None  # (batch, kept) positions; None: the full layer

        def forward(
            self,
            hidden_states: torch.Tensor,
            attention_mask: torch.Tensor | None = None,
            position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
            **kwargs: Any,
        ) -> torch.Tensor:
            keep = self.keep
            if keep is None:
                return super().forward(
                    hidden_states,
                    attention_mask=attention_mask,
                    position_embeddings=position_embeddings,
                    **kwargs,
                )
            attention = self.self_attn
            batch, length, _ = hidden_states.shape
            kept = keep.shape[1]
            rows = torch.arange(batch, device=keep.device)[:, None]
            normed = self.input_layernorm(hidden_states)
            query = attention.q_proj(normed[rows, keep]).view(batch, kept, -1, attention.head_dim)
            key = attention.k_proj(normed).view(batch, length, -1, attention.head_dim)
            value = attention.v_proj(normed).view(batch, length, -1, attention.head_dim)
            query, key = attention.q_norm(query).transpose(1, 2), attention.k_norm(key).transpose(1, 2)
            cos, sin = (t.expand(batch, -1, -1) for t in position_embeddings)
            query = _rotated(query, cos[rows, keep], sin[rows, keep])
            key = _rotated(key, cos, sin)
            allowed = _allowed_keys(keep, length, attention_mask, attention.sliding_window)
            attended = _grouped_attention(query, key, value.transpose(1, 2), allowed, attention.scaling)
            attended = attended.transpose(1, 2).reshape(batch, kept, -1)
            hidden = hidden_states[rows, keep] + attention.o_proj(attended)
            return hidden + self.mlp(self.post_attention_layernorm(hidden))

    return TrimmedQwen3DecoderLayer


def use_trimmed_last_layer(backbone: nn.Module, trimmed: bool) -> None:
    """Switch the backbone's last decoder layer to the trimmable one or back to transformers' own."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer

    last = backbone.layers[-1]
    last.__class__ = _trimmed_layer_class() if trimmed else Qwen3DecoderLayer


@contextlib.contextmanager
def last_layer_at(backbone: nn.Module, keep: torch.Tensor) -> Iterator[None]:
    """Within the block, the backbone's output (after the final norm) is (batch, kept, hidden): the
    last hidden state at `keep`'s positions, row by row. Needs `use_trimmed_last_layer(…, True)`."""
    last = backbone.layers[-1]
    if not isinstance(last, _trimmed_layer_class()):
        raise TypeError("the last layer is transformers' own; call use_trimmed_last_layer first")
    last.keep = keep
    try:
        yield
    finally:
        last.keep = None
