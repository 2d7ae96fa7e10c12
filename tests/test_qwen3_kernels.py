"""The faster Qwen3 modules against transformers' own, on tiny random backbones."""

from __future__ import annotations

import shutil

import pytest
import torch

from rerank_eval import compiling
from rerank_eval.rerankers.listwise.qwen3_kernels import (
    _allowed_keys,
    last_layer_at,
    use_compiled_elementwise,
    use_fused_rms_norm,
    use_trimmed_last_layer,
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_rotary_kernel_is_transformers_formula_bit_for_bit(dtype):
    """`compiling.rotary` (halves turned by flip and sign, for one fused pass) gives transformers'
    `x * cos + rotate_half(x) * sin` exactly, eager and compiled, for both head sizes in use."""
    from transformers.models.qwen3.modeling_qwen3 import rotate_half

    generator = torch.Generator().manual_seed(7)
    for tokens, heads, size in ((37, 16, 64), (53, 4, 128)):
        states, cos, sin = (torch.randn(*shape, generator=generator).to(dtype)
                            for shape in ((tokens, heads, size), (tokens, size), (tokens, size)))  # fmt: skip
        expected = states * cos.unsqueeze(1) + rotate_half(states) * sin.unsqueeze(1)
        assert torch.equal(compiling.rotary(states, cos, sin), expected)
        with torch.inference_mode():
            compiled = compiling.compiled(compiling.rotary)(states, cos, sin)
        reference = torch.compile(lambda s, c, n: s * c.unsqueeze(1) + rotate_half(s) * n.unsqueeze(1))
        with torch.inference_mode():
            assert torch.equal(compiled, reference(states, cos, sin))


def test_fused_rms_norm_equals_transformers_rms_norm():
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    torch.manual_seed(0)
    norm = Qwen3RMSNorm(64, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(64))
    holder = torch.nn.Sequential(norm)
    hidden = torch.randn(3, 7, 64) * torch.logspace(-3, 3, 7)[None, :, None]  # tiny to large rows
    # float32: the same arithmetic; bfloat16: one rounding (≤ 2^-9 each) where transformers has two
    for dtype, tolerance in ((torch.float32, 1e-6), (torch.bfloat16, 2**-7)):
        holder.to(dtype)
        assert use_fused_rms_norm(holder, False) == 1 and type(norm) is Qwen3RMSNorm
        with torch.no_grad():
            expected = holder(hidden.to(dtype)).float()
            assert use_fused_rms_norm(holder, True) == 1 and type(norm) is not Qwen3RMSNorm
            fused = holder(hidden.to(dtype))
        assert fused.dtype == dtype
        relative = (fused.float() - expected).abs() / expected.abs().clamp_min(1e-30)
        assert relative.max() <= tolerance


def backbone(
    window: int | None = None, heads: int = 4, kv_heads: int = 2, full_layers: int = 0, kernel: str = "sdpa"
):
    """A 3-layer Qwen3 backbone; with a window, the layers after the first `full_layers` slide."""
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(
        vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=8,
        max_position_embeddings=256, rope_theta=10_000.0,
        use_sliding_window=window is not None, sliding_window=window, max_window_layers=full_layers,
    )  # fmt: skip
    config._attn_implementation = kernel
    torch.manual_seed(0)
    return Qwen3Model(config).eval()


# two right-padded rows of 40 and 23 real tokens; the positions read in each, the second padded by
# repeating its last one (as the listwise reranker does)
LENGTHS = (40, 23)
KEEP = torch.tensor([[0, 5, 17, 30, 38, 39], [3, 9, 22, 22, 22, 22]])


def ids() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    rows = torch.randint(1, 50, (len(LENGTHS), max(LENGTHS)), generator=generator)
    rows[1, LENGTHS[1] :] = 0
    return rows


@pytest.mark.parametrize(
    ("window", "heads", "kv_heads", "full_layers", "kernel"),
    [
        (None, 4, 2, 0, "sdpa"),
        (None, 4, 4, 0, "sdpa"),
        (None, 4, 1, 0, "sdpa"),
        (None, 4, 2, 0, "eager"),  # transformers passes a float mask of batch 1
        (6, 4, 2, 0, "sdpa"),  # every layer slides: transformers passes a boolean mask
        (6, 4, 2, 2, "sdpa"),  # only the last layer slides
        (6, 4, 2, 1, "eager"),
    ],
)
def test_trimmed_last_layer_equals_full_layer_at_kept_positions(window, heads, kv_heads, full_layers, kernel):
    model = backbone(window, heads, kv_heads, full_layers, kernel)
    rows = torch.arange(len(LENGTHS))[:, None]
    with torch.inference_mode():
        full = model(input_ids=ids(), use_cache=False).last_hidden_state[rows, KEEP]
        use_trimmed_last_layer(model, True)
        with last_layer_at(model, KEEP):
            trimmed = model(input_ids=ids(), use_cache=False).last_hidden_state
        assert model.layers[-1].keep is None  # reset: later calls run the full layer
        again = model(input_ids=ids(), use_cache=False).last_hidden_state[rows, KEEP]
    assert trimmed.shape == (len(LENGTHS), KEEP.shape[1], 32)
    assert (trimmed - full).abs().max() <= 1e-5
    assert torch.equal(again, full)
    if window:  # the window matters here: without it the same positions read otherwise
        with torch.inference_mode():
            causal = backbone(None, heads, kv_heads, 0, kernel)(input_ids=ids(), use_cache=False)
        assert (causal.last_hidden_state[rows, KEEP] - full).abs().max() > 1e-3


def test_trimmed_last_layer_refuses_a_cache_and_a_mask_it_cannot_read():
    model = backbone()
    use_trimmed_last_layer(model, True)
    with torch.inference_mode(), last_layer_at(model, KEEP):
        with pytest.raises(ValueError, match="use_cache=False"):
            model(input_ids=ids(), use_cache=True)
    for mask in (torch.ones(2, 40, dtype=torch.bool), object()):  # a padding mask; a flex BlockMask
        with pytest.raises(ValueError, match="4-d mask tensor"):
            _allowed_keys(KEEP, 40, mask, None, None)


def test_sliding_window_mask_without_transformers_mask_equals_its_rows():
    """When transformers passes no mask (FlashAttention, or prompts within the window) the trimmed
    layer builds one: it must match the rows of the mask transformers builds otherwise."""
    model = backbone(window=6)
    captured = {}

    def capture(module, args, kwargs):
        captured["mask"] = kwargs["attention_mask"]

    model.layers[-1].register_forward_pre_hook(capture, with_kwargs=True)
    with torch.inference_mode():
        model(input_ids=ids(), use_cache=False)
    transformers_mask = captured["mask"]
    assert transformers_mask is not None and transformers_mask.dim() == 4
    built = _allowed_keys(KEEP, max(LENGTHS), None, 6, None)
    assert torch.equal(built, _allowed_keys(KEEP, max(LENGTHS), transformers_mask, None, None))


def test_switching_back_restores_transformers_layer_and_reading_needs_the_trimmed_one():
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer

    model = backbone()
    use_trimmed_last_layer(model, True)
    assert type(model.layers[-1]) is not Qwen3DecoderLayer
    assert all(type(layer) is Qwen3DecoderLayer for layer in model.layers[:-1])
    use_trimmed_last_layer(model, False)
    assert type(model.layers[-1]) is Qwen3DecoderLayer
    with pytest.raises(TypeError, match="use_trimmed_last_layer"), last_layer_at(model, KEEP):
        pass


needs_compiler = pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on a CPU needs a C++ compiler"
)


@needs_compiler
@pytest.mark.parametrize("trimmed", [False, True])
def test_compiled_elementwise_equals_transformers_modules(trimmed):
    from transformers.models.qwen3.modeling_qwen3 import Qwen3Attention, Qwen3MLP

    model = backbone()
    rows = torch.arange(len(LENGTHS))[:, None]
    compiling.compiled.cache_clear()
    with torch.inference_mode():
        expected = model(input_ids=ids(), use_cache=False).last_hidden_state[rows, KEEP]
        use_trimmed_last_layer(model, trimmed)
        use_compiled_elementwise(model, True)
        assert all(type(m) is not Qwen3Attention for m in model.modules() if isinstance(m, Qwen3Attention))
        assert all(type(m) is not Qwen3MLP for m in model.modules() if isinstance(m, Qwen3MLP))
        if trimmed:
            with last_layer_at(model, KEEP):
                compiled = model(input_ids=ids(), use_cache=False).last_hidden_state
        else:
            compiled = model(input_ids=ids(), use_cache=False).last_hidden_state[rows, KEEP]
        use_compiled_elementwise(model, False)
    assert (compiled - expected).abs().max() <= 1e-5
    assert compiling.compiled.cache_info().currsize == 2  # norm-and-rotary and SiLU-times-up were compiled
    assert all(type(m).__module__.startswith(("transformers", "torch")) for m in model.layers[0].modules())
