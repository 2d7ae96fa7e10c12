"""jina-embeddings-v3's fused modules (`first_stage/dense/jina_kernels.py`) against transformers' own.

The fused modules are a GPU default; here they are compiled for the CPU (Inductor's C++ backend) in
float32, where compiled and eager kernels differ at most in the last bits.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rerank_eval import compiling
from rerank_eval.errors import UserError
from rerank_eval.first_stage.dense import jina_kernels, kernel_choice
from rerank_eval.first_stage.dense.encoder import DenseEncoder
from rerank_eval.first_stage.dense.recipe import read_recipe
from rerank_eval.models.checkpoint import resolve_checkpoint
from tests import dense_checkpoints

needs_compiler = pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on a CPU needs a C++ compiler"
)
TEXTS = ["the quick brown fox", "a", "vitamin c prevents scurvy " * 6, "dogs bark", "x y z", "a"]
ADAPTERS = {"query": "retrieval_query", "passage": "retrieval_passage"}
RECIPE = {"pooling": "mean", "normalize": True, "max_length": None, "query_prefix": "q: ",
          "passage_prefix": "p: ", "adapters": ADAPTERS}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def jina(tmp_path_factory) -> Path:
    return dense_checkpoints.build_jina_embeddings(tmp_path_factory.mktemp("fused") / "jina-v3")


def _encoder(folder: Path, **kwargs) -> DenseEncoder:
    checkpoint = resolve_checkpoint(str(folder))
    recipe = read_recipe(checkpoint.folder, checkpoint.source, RECIPE)
    return DenseEncoder(checkpoint, recipe, device="cpu", dtype="float32", **kwargs)


def _batch(lengths: list[int], vocabulary: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random ids and their 2-d mask."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocabulary, (len(lengths), max(lengths)), generator=generator)
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids * mask + (1 - mask), mask  # pad id 1 (XLM-R's)


def test_the_4d_mask_is_the_one_transformers_builds(jina):
    from transformers import AutoModel
    from transformers.masking_utils import create_bidirectional_mask

    model = AutoModel.from_pretrained(str(jina), attn_implementation="sdpa")
    _, mask = _batch([5, 2, 4], 50, 0)
    embeds = torch.zeros(3, 5, model.config.hidden_size)
    theirs = create_bidirectional_mask(config=model.config, inputs_embeds=embeds, attention_mask=mask)
    ours = jina_kernels.padding_mask_4d(mask)
    assert ours.dtype == theirs.dtype == torch.bool and torch.equal(ours, theirs.expand_as(ours))
    # handed to transformers, it comes back untouched (so nothing asks the device about padding)
    assert create_bidirectional_mask(config=model.config, inputs_embeds=embeds, attention_mask=ours) is ours
    # without padding transformers drops the mask; ours lets every key through, the same attention
    assert jina_kernels.padding_mask_4d(torch.ones(2, 3, dtype=torch.long)).all()


@needs_compiler
def test_fused_modules_equal_transformers_modules(jina):
    from transformers import AutoModel
    from transformers.models.jina_embeddings_v3.modeling_jina_embeddings_v3 import (
        JinaEmbeddingsV3Attention,
        JinaEmbeddingsV3Layer,
    )

    model = AutoModel.from_pretrained(str(jina), attn_implementation="sdpa").eval()
    vocabulary = model.config.vocab_size
    batches = [_batch([7, 3, 5], vocabulary, 1), _batch([4], vocabulary, 2), _batch([9, 9], vocabulary, 3)]
    with torch.inference_mode():
        expected = [model(input_ids=ids, attention_mask=mask).last_hidden_state for ids, mask in batches]
    compiling.compiled.cache_clear()
    torch._dynamo.reset()
    assert jina_kernels.compile_failure(model.config, torch.device("cpu"), torch.float32) is None
    assert jina_kernels.use_fused_modules(model, True) == model.config.num_hidden_layers
    assert {type(m).__name__ for m in model.modules() if isinstance(m, JinaEmbeddingsV3Layer)} == {
        "FusedJinaEmbeddingsV3Layer"
    }
    # the kernels compiled by the check serve every batch shape: nothing compiles again
    with torch._dynamo.config.patch(error_on_recompile=True), torch.inference_mode():
        for (ids, mask), reference in zip(batches, expected):
            got = model(input_ids=ids, attention_mask=jina_kernels.padding_mask_4d(mask)).last_hidden_state
            real = mask.bool()
            assert (got[real] - reference[real]).abs().max() <= 1e-5
    assert compiling.compiled.cache_info().currsize == 2  # rotary pair, add-and-LayerNorm
    jina_kernels.use_fused_modules(model, False)
    assert {type(m) for m in model.modules() if isinstance(m, JinaEmbeddingsV3Attention)} == {
        JinaEmbeddingsV3Attention
    }
    assert all(type(m).__module__.startswith(("transformers", "torch")) for m in model.modules())


@needs_compiler
@pytest.mark.parametrize("merge_adapters", [True, False])
def test_the_encoder_with_fused_kernels_gives_the_same_vectors(jina, merge_adapters):
    fused = _encoder(jina, fused_kernels=True, merge_adapters=merge_adapters, max_batch_tokens=24)
    plain = _encoder(jina, fused_kernels=False, merge_adapters=merge_adapters, max_batch_tokens=24)
    assert fused.fused_kernels is True and plain.fused_kernels is False
    for side in ("query", "passage"):  # per-side adapters: each side's model is fused
        with torch._dynamo.config.patch(error_on_recompile=True):  # the kernels the check compiled
            got = fused.embed(TEXTS, side)
        expected = plain.embed(TEXTS, side)
        assert np.abs(got - expected).max() <= 1e-5
        layers = fused.model(side).modules()
        assert any(type(m).__name__ == "FusedJinaEmbeddingsV3Attention" for m in layers)
    # what decides the vectors' last bits keys the corpus cache
    assert fused.identity("passage")["fused_kernels"] == jina_kernels.FUSED_KERNELS_VERSION == 2
    assert fused.identity("passage") != plain.identity("passage")


@needs_compiler
def test_a_dense_first_stage_setting_turns_them_on(jina):
    from rerank_eval.first_stage.dense import DenseRetrieval

    where = "first_stages.mine"
    settings = {"encoder": str(jina), "pooling": "mean", "adapters": ADAPTERS}
    for asked, expected in ((True, True), (False, False), (None, False)):  # None: the CPU default
        checked = DenseRetrieval().validate(where, {**settings, "fused_kernels": asked})
        assert DenseRetrieval.build_encoder(checked).fused_kernels is expected
    with pytest.raises(UserError, match="fused_kernels"):
        DenseRetrieval().validate(where, {**settings, "fused_kernels": "yes"})


def test_fused_kernels_are_off_on_a_cpu_by_default_and_only_for_jina(jina, tmp_path, capsys):
    assert _encoder(jina).fused_kernels is False  # the CPU default
    bert = dense_checkpoints.build_sentence_transformers(tmp_path / "st", pooling="mean", normalize=True)
    checkpoint = resolve_checkpoint(str(bert))
    recipe = read_recipe(checkpoint.folder, checkpoint.source, dict.fromkeys(RECIPE))
    encoder = DenseEncoder(checkpoint, recipe, device="cpu", dtype="float32", fused_kernels=True)
    assert encoder.fused_kernels is False and encoder.identity("passage")["fused_kernels"] is False
    assert "is not jina-embeddings-v3's architecture" in capsys.readouterr().err  # asked for: said


@needs_compiler
def test_in_bfloat16_no_farther_from_float32_than_transformers_modules(jina):
    """Compiled kernels round once where eager rounds after each step: in bfloat16 the fused
    vectors may differ from eager's, but they are no worse an approximation of float32's."""
    exact = _encoder(jina, fused_kernels=False).embed(TEXTS, "passage")
    checkpoint = resolve_checkpoint(str(jina))
    recipe = read_recipe(checkpoint.folder, checkpoint.source, RECIPE)
    vectors = {}
    for fused in (False, True):
        encoder = DenseEncoder(checkpoint, recipe, "cpu", "bfloat16", fused_kernels=fused)
        assert encoder.fused_kernels is fused
        vectors[fused] = encoder.embed(TEXTS, "passage")
    eager, ours = (float(np.abs(vectors[f] - exact).max()) for f in (False, True))
    assert 0 < eager < 0.05 and ours <= 1.5 * eager, (eager, ours)


def test_configs_it_cannot_read_are_left_to_the_model_loader(jina, tmp_path):
    assert jina_kernels.fusable_config(jina).num_attention_heads == 4
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "jina_embeddings_v3", ', encoding="utf-8")
    assert jina_kernels.fusable_config(broken) is None
    (broken / "config.json").write_text('["jina_embeddings_v3"]', encoding="utf-8")
    assert jina_kernels.fusable_config(broken) is None
    assert jina_kernels.fusable_config(tmp_path / "missing") is None
    config = jina_kernels.fusable_config(jina)
    config.num_attention_heads = 0  # sizes that cannot work: a line, not an exception
    failure = jina_kernels.compile_failure(config, torch.device("cpu"), torch.float32)
    assert failure.startswith("ZeroDivisionError") and "\n" not in failure


def test_ranks_decide_together(jina, monkeypatch, capsys):
    """Under torchrun a rank that cannot compile turns the kernels off on every rank (their shards
    share one cache folder, keyed by the setting); asked for, every rank stops with the same line."""
    from rerank_eval.runtime import distributed

    monkeypatch.setattr(jina_kernels, "compile_failure", lambda *args: None)  # this rank compiles
    monkeypatch.setattr(kernel_choice, "compile_by_default", lambda device: True)
    gathered = []

    def gather(value):
        gathered.append(value)
        return [value, "InductorError: rank 1 has no compiler"]

    monkeypatch.setattr(distributed, "all_gathered_objects", gather)
    assert _encoder(jina).fused_kernels is False and gathered == [None]
    assert "rank 1 has no compiler" in capsys.readouterr().err
    with pytest.raises(UserError, match="rank 1 has no compiler"):
        _encoder(jina, fused_kernels=True)


def test_a_config_over_other_weights_is_refused_when_loaded(jina, monkeypatch):
    monkeypatch.setattr(jina_kernels, "compile_failure", lambda *args: None)
    monkeypatch.setattr(jina_kernels, "use_fused_modules", lambda model, fused: 0)
    encoder = _encoder(jina, fused_kernels=True)
    with pytest.raises(UserError, match="has no JinaEmbeddingsV3 layers"):
        encoder.model("query")


def test_kernels_that_cannot_compile(jina, monkeypatch, capsys):
    monkeypatch.setattr(jina_kernels, "compile_failure", lambda *args: "InductorError: no C compiler")
    with pytest.raises(UserError) as raised:  # asked for: one line
        _encoder(jina, fused_kernels=True)
    assert (
        str(raised.value)
        == "torch.compile cannot build the encoder's kernels on cpu: InductorError: no C compiler"
    )
    monkeypatch.setattr(kernel_choice, "compile_by_default", lambda device: True)
    encoder = _encoder(jina)  # by default: transformers' modules, said once, recorded
    assert encoder.fused_kernels is False and encoder.identity("query")["fused_kernels"] is False
    assert "no C compiler" in capsys.readouterr().err
    assert not any("Fused" in type(m).__name__ for m in encoder.model("query").modules())


# --- texts packed end to end (packed_sequences) -----------------------------------------------------


@needs_compiler
@pytest.mark.parametrize("merge_adapters", [True, False])
def test_packed_texts_give_the_vectors_of_padded_batches(jina, merge_adapters, monkeypatch):
    """Packed end to end, positions restarting at each text and attention kept within it, the vectors
    are those of right-padded batches through transformers' own modules; no T×T mask is ever built
    and the kernels the checks compiled serve every packed shape."""
    plain = _encoder(jina, fused_kernels=False, merge_adapters=merge_adapters, max_batch_tokens=24)
    packed = _encoder(jina, fused_kernels=True, packed_sequences=True, merge_adapters=merge_adapters,
                      max_batch_tokens=24)  # fmt: skip
    masks = []
    forward = jina_kernels._fused_classes()[0].forward

    def watched(self, hidden_states, attention_mask=None, **kwargs):
        masks.append(attention_mask)
        return forward(self, hidden_states, attention_mask, **kwargs)

    monkeypatch.setattr(jina_kernels._fused_classes()[0], "forward", watched)
    for side in ("query", "passage"):
        with torch._dynamo.config.patch(error_on_recompile=True):
            got = packed.embed(TEXTS, side)
        assert np.abs(got - plain.embed(TEXTS, side)).max() <= 1e-5
        assert type(packed.model(side).layers[0].self_attn).__name__ == "FusedJinaEmbeddingsV3Attention"
    assert masks and all(mask is None for mask in masks)
    assert packed.stats["forward_passes"] >= 4  # several batches, of several texts each
    # 2: batches under a budget of real tokens (True was the padded positions' budget)
    assert packed.identity("passage")["packed_sequences"] == 2
    assert "packed_sequences" not in plain.identity("passage")  # keys of earlier caches hold


@needs_compiler
def test_packed_batches_budget_real_tokens(jina):
    """Nothing is padded in a packed batch, so its budget counts tokens: longest texts first, as many
    as add up to the budget, where padded batches count texts × the longest."""
    lengths = [6, 5, 5, 1, 1, 1, 1]
    plain = _encoder(jina, fused_kernels=True)
    packed = _encoder(jina, fused_kernels=True, packed_sequences=True)
    assert plain._batches(lengths, 12) == [[0, 1], [2, 3], [4, 5, 6]]
    assert packed._batches(lengths, 12) == [[0, 1], [2, 3, 4, 5, 6]]
    assert packed._batches([1, 3, 2, 8], 5) == [[3], [1, 2], [0]]  # a text over the budget alone


@pytest.mark.parametrize("pooling", ["mean", "cls", "lasttoken", "max"])
def test_packed_pooling_is_each_texts_own_within_the_budget(pooling, monkeypatch):
    """Each text's vector from the packed row is its own tokens pooled (written out per text here),
    and no padded layout holds more positions than the budget, however long one text in the row is
    (a text longer than the budget alone)."""
    from rerank_eval.first_stage.dense import vectors as vectors_module

    lengths = [2, 9, 1, 3, 1, 3]
    bounds = [0, *itertools.accumulate(lengths)]
    hidden = torch.randn(bounds[-1], 4, generator=torch.Generator().manual_seed(5))
    layouts = []
    pool = vectors_module.pool

    def watched(laid_out, mask, kind):
        layouts.append(tuple(laid_out.shape[:2]))
        return pool(laid_out, mask, kind)

    monkeypatch.setattr(vectors_module, "pool", watched)
    got = vectors_module.pool_packed(hidden, bounds, pooling, budget=8, multiple=1)
    own = {"mean": lambda t: t.mean(0), "cls": lambda t: t[0], "lasttoken": lambda t: t[-1],
           "max": lambda t: t.max(0).values}[pooling]  # fmt: skip
    expected = torch.stack([own(hidden[a:b]) for a, b in itertools.pairwise(bounds)])
    assert torch.allclose(got, expected, atol=1e-6)
    assert sorted(layouts) == [(1, 9), (2, 3), (3, 2)]  # 9 alone; 3 and 3; 2, 1 and 1


def test_packed_pooling_of_half_precision_states_is_float32_as_padded_pooling():
    """On a GPU the hidden states are bfloat16: each vector is pooled in float32, as `pool` pools a
    padded batch, not rounded back to the states' precision (up to 2.6e-3 off)."""
    from rerank_eval.first_stage.dense.vectors import pool, pool_packed

    hidden = torch.randn(10, 8, generator=torch.Generator().manual_seed(2)).bfloat16()
    bounds = [0, 3, 7, 10]
    got = pool_packed(hidden, bounds, "mean", budget=64, multiple=1)
    padded = torch.zeros(3, 4, 8, dtype=torch.bfloat16)
    mask = torch.zeros(3, 4, dtype=torch.long)
    for row, (start, end) in enumerate(itertools.pairwise(bounds)):
        padded[row, : end - start], mask[row, : end - start] = hidden[start:end], 1
    assert got.dtype == torch.float32
    assert torch.equal(got, pool(padded, mask, "mean"))


def test_packed_attention_keeps_each_text_to_itself():
    """Text by text: a text's output does not move when another text in the row changes."""
    generator = torch.Generator().manual_seed(3)
    bounds = (0, 2, 7, 8)
    states = [torch.randn(8, 2, 4, generator=generator) for _ in range(3)]
    packing = jina_kernels.Packing(torch.tensor(bounds, dtype=torch.int32), bounds)
    first = jina_kernels.packed_attention(*states, packing, 0.5)
    for t in states:
        t[2:7] += 1.0  # the middle text changes
    second = jina_kernels.packed_attention(*states, packing, 0.5)
    assert torch.equal(first[:2], second[:2]) and torch.equal(first[7:], second[7:])
    assert not torch.allclose(first[2:7], second[2:7])
    alone = torch.nn.functional.scaled_dot_product_attention(
        *(t[2:7].transpose(0, 1) for t in states), scale=0.5
    ).transpose(0, 1)
    assert torch.allclose(second[2:7], alone, atol=1e-6)
    assert packing.longest == 5


def test_packing_is_only_where_it_can_run(jina, tmp_path, monkeypatch):
    """Asked for without the fused kernels, or where the varlen kernel fails or disagrees with SDPA:
    one line; off by default."""
    assert _encoder(jina).packed_sequences is False
    with pytest.raises(UserError, match="packed_sequences runs in the fused kernels"):
        _encoder(jina, fused_kernels=False, packed_sequences=True)
    bert = dense_checkpoints.build_sentence_transformers(tmp_path / "st", pooling="mean", normalize=True)
    checkpoint = resolve_checkpoint(str(bert))
    recipe = read_recipe(checkpoint.folder, checkpoint.source, dict.fromkeys(RECIPE))
    with pytest.raises(UserError, match="packed_sequences runs in the fused kernels"):
        DenseEncoder(checkpoint, recipe, "cpu", "float32", fused_kernels=True, packed_sequences=True)
    config = jina_kernels.fusable_config(jina)
    cpu = torch.device("cpu")
    assert jina_kernels.packing_failure(config, cpu, torch.float32) is None
    assert jina_kernels.packing_failure(config, cpu, torch.bfloat16) is None  # within bf16's rounding
    exact = jina_kernels.packed_attention

    def off_in_bf16(query, *args):  # a kernel that is wrong in half precision only
        return exact(query, *args) + (0.5 if query.dtype == torch.bfloat16 else 0)

    monkeypatch.setattr(jina_kernels, "packed_attention", off_in_bf16)
    failure = jina_kernels.packing_failure(config, cpu, torch.bfloat16)
    assert failure.startswith("the varlen kernel differs from SDPA by 0.5")

    def unsupported(*args):  # what FlashAttention says on a GPU older than Ampere
        raise RuntimeError("FlashAttention only supports Ampere GPUs or newer.\nmore")

    monkeypatch.setattr(jina_kernels, "packed_attention", unsupported)
    failure = jina_kernels.packing_failure(config, cpu, torch.float32)
    assert failure == "RuntimeError: FlashAttention only supports Ampere GPUs or newer."
    monkeypatch.setattr(jina_kernels, "compile_failure", lambda *args: None)
    with pytest.raises(UserError, match="packed_sequences cannot run on cpu: RuntimeError"):
        _encoder(jina, fused_kernels=True, packed_sequences=True)


@needs_compiler
def test_the_compile_trial_leaves_rows_dynamic_and_widths_constant(jina):
    """After the trial any number of rows reuses its kernels, while heads and head sizes are
    compiled in as constants (other heads compile again): Inductor's kernels over symbolic sizes
    index with run-time divisions, and the rotary kernel ran at a quarter of the H200's bandwidth."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(jina))
    heads = config.num_attention_heads
    size = config.hidden_size // heads
    compiling.compiled.cache_clear()
    torch._dynamo.reset()
    assert jina_kernels.compile_failure(config, torch.device("cpu"), torch.float32) is None
    rotated_pair = compiling.compiled(jina_kernels._rotated_pair)

    def rotated(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        halves = states.chunk(2, dim=-1)
        turned = torch.cat((-halves[1], halves[0]), dim=-1)
        return states * cos[:, None, :] + turned * sin[:, None, :]

    with torch._dynamo.config.patch(error_on_recompile=True), torch.inference_mode():
        for rows in (2, 7, 40):
            query, key = torch.randn(rows, heads, size), torch.randn(rows, heads, size)
            cos, sin = torch.randn(rows, size), torch.randn(rows, size)
            got = rotated_pair(query, key, cos, sin)
            assert (got[0] - rotated(query, cos, sin)).abs().max() <= 1e-5
            assert (got[1] - rotated(key, cos, sin)).abs().max() <= 1e-5
        other = torch.randn(7, heads + 1, size)
        with pytest.raises(torch._dynamo.exc.RecompileError):
            rotated_pair(other, other.clone(), torch.randn(7, size), torch.randn(7, size))


def test_the_encoder_loads_its_model_outside_inference_mode(jina, monkeypatch):
    """`embed` runs in inference mode; a model loaded there and moved to a GPU would hold inference
    tensors, unlike the weights of the compile trial, and the kernels would compile again mid-run."""
    encoder = _encoder(jina, fused_kernels=False)
    modes = []
    load = DenseEncoder._load_model

    def recording_load(self, side):
        modes.append(torch.is_inference_mode_enabled())
        return load(self, side)

    monkeypatch.setattr(DenseEncoder, "_load_model", recording_load)
    with torch.inference_mode():
        encoder.embed(TEXTS, "query")
    assert modes == [False]
    assert encoder.model("query").use_kernels is False  # its own layers, not the Hub's kernels


def test_the_varlen_kernel_is_called_as_its_operator_declares():
    """On CUDA packed attention calls aten's FlashAttention operator directly; on meta tensors
    the operator gives its output's shape, so a call that no longer fits the installed torch's
    schema (arguments renamed, moved or added) fails here rather than on a GPU."""
    bounds = (0, 3, 10, 11)
    states = [torch.empty(11, 4, 8, device="meta", dtype=torch.bfloat16) for _ in range(3)]
    packing = jina_kernels.Packing(torch.tensor(bounds, dtype=torch.int32, device="meta"), bounds)
    out = jina_kernels.varlen_kernel(*states, packing, 8**-0.5)
    assert out.shape == (11, 4, 8) and out.dtype == torch.bfloat16
