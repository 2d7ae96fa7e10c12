"""The listwise model's parts and settings: the projector, its weights in the checkpoint, the
settings a run records, and the device-dependent defaults (attention, padding, compiled kernels)."""

from __future__ import annotations

import torch
from torch import nn

from rerank_eval.errors import UserError
from rerank_eval.models.checkpoint import Checkpoint
from rerank_eval.models.common import (
    attention_implementation,
)
from rerank_eval.rerankers.listwise.qwen3_kernels import (
    register_repeated_kv_attention,
)

# Attention implementations that take packed sequences' boundaries (cu_seq_lens_*, max_length_*).
VARLEN_ATTENTIONS = frozenset({"flash_attention_2", "flash_attention_3"})
# Settings that only regroup the same arithmetic (scores move by float rounding at most): they are
# recorded in the manifest but not part of the score cache's key.
BATCHING_SETTINGS = ("max_batch_tokens", "pad_multiple", "pack_blocks")


def default_pad_multiple(device: torch.device) -> int:
    """On CUDA, forward-pass lengths rounded up to a multiple of 64 tokens: cuDNN attention (what
    SDPA picks on Hopper) plans every new sequence length once, about 33 ms on an H200, which a
    BEIR run whose prompts all differ in length would otherwise pay on most forward passes. The
    padding costs at most 63 positions per row; a CPU has no such plans and pads nothing."""
    return 64 if device.type == "cuda" else 1


def listwise_attention(device: torch.device, dtype: torch.dtype) -> str:
    """The attention kernel for the listwise backbone on this device and dtype."""
    if device.type == "cuda" and dtype == torch.float32:
        return register_repeated_kv_attention()
    return attention_implementation(device, dtype)


class Projector(nn.Module):
    """Linear → ReLU → Linear, shapes read from the checkpoint's weights."""

    def __init__(self, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        first, second = weights["projector.0.weight"], weights["projector.2.weight"]
        self.layers = nn.Sequential(
            nn.Linear(first.shape[1], first.shape[0], bias="projector.0.bias" in weights),
            nn.ReLU(),
            nn.Linear(second.shape[1], second.shape[0], bias="projector.2.bias" in weights),
        )
        self.layers.load_state_dict({k.removeprefix("projector."): v.float() for k, v in weights.items()})

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.layers(hidden)


def cast_as_loading_does(backbone: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The backbone in `dtype` as `from_pretrained(dtype=...)` leaves it: the rotary frequencies
    (`inv_freq` buffers) stay float32, as transformers computes them, where a plain `.to(dtype)`
    would round them and move every position's angle."""
    kept = {name: buffer for name, buffer in backbone.named_buffers() if name.endswith("inv_freq")}
    backbone.to(dtype)
    for name, buffer in kept.items():
        owner, _, attribute = name.rpartition(".")
        setattr(backbone.get_submodule(owner), attribute, buffer)
    return backbone


def load_projector_weights(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    files = sorted(checkpoint.folder.glob("*.safetensors"))
    weights: dict[str, torch.Tensor] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                if key.startswith("projector."):
                    weights[key] = handle.get_tensor(key)
    missing = [k for k in ("projector.0.weight", "projector.2.weight") if k not in weights]
    if not files or missing:
        raise UserError(
            f"checkpoint {checkpoint.source} lacks projector weights "
            f"({', '.join(missing) if files else 'no .safetensors file'}); a listwise last-token checkpoint "
            f"stores them beside the backbone"
        )
    return weights
