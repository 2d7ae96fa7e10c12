"""How a model is told to be of a family and what a reranker records, where the family tests leave
it open (found by a mutation round on `rerankers/identify.py`, `registry.py`, `settings.py`,
`base.py` and `listwise/model.py`): a preset that runs its Hub repository's code once allowed, a
folder named from the home directory, a Hub id close to a preset's name, the registry's refusals
and declarations, the listwise settings' defaults, the base class's helpers and the listwise
model's parts.

Expected values are written out by hand.
"""

from __future__ import annotations

import json

import pytest

from rerank_eval.config.reader import load_config
from rerank_eval.errors import UserError
from rerank_eval.rerankers.identify import ModelFamily, model_family

# --- identify.py --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "who"),
    [
        ("jina-reranker-v2", "preset jina-reranker-v2"),
        ("jinaai/jina-reranker-v2-base-multilingual", "the model of preset jina-reranker-v2"),
    ],
)
def test_a_preset_that_runs_its_own_code_is_its_family_once_allowed(name, who):
    """jina-reranker-v2 ships code in its Hub repository: refused without trust_remote_code (the
    message naming whose model it is, the model and the flag in the library's words), its
    preset's family, model and settings with it; naming the model by its Hub id is no way around
    the flag."""
    config = load_config(None)
    with pytest.raises(UserError) as refused:
        model_family(name, config)
    assert str(refused.value) == (
        f"{who} runs code from its Hub repository "
        "(jinaai/jina-reranker-v2-base-multilingual); pass trust_remote_code=True to allow it"
    )
    assert model_family(name, config, trust_remote_code=True) == ModelFamily(
        "cross-encoder",
        "jinaai/jina-reranker-v2-base-multilingual",
        {"max_length": 1024, "max_batch_tokens": 65536},
    )


def test_a_folder_named_from_the_home_directory_is_recognised(tmp_path, monkeypatch):
    """`~/NAME` is the folder NAME of the home directory: its config names a sequence classifier,
    so it is a cross-encoder, and the source is kept as it was given."""
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / "my-classifier"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    monkeypatch.chdir(tmp_path / "my-classifier")  # (no folder of the name where the run starts)
    found = model_family("~/my-classifier", load_config(None))
    assert found == ModelFamily("cross-encoder", "~/my-classifier", {})


def test_a_hub_id_close_to_a_presets_name_is_no_typo(tmp_path, monkeypatch):
    """'o/minilm-bi' is 0.9 of the way to the preset 'minilm-bi' by difflib's ratio, but an ORG/NAME
    is a Hub id, never a mistyped preset: what cannot be told of it is its family."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as refused:
        model_family("o/minilm-bi", load_config(None))
    assert str(refused.value).startswith("cannot tell which family model 'o/minilm-bi' belongs to; ")


def test_a_name_three_quarters_of_the_way_to_a_presets_is_a_typo(tmp_path, monkeypatch):
    """'minilmx' shares 'minilm' with 'minilm-bi': difflib's ratio is 2 * 6 / (7 + 9) = 0.75, exactly
    the cutoff, so it is a mistyped preset."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as refused:
        model_family("minilmx", load_config(None))
    assert str(refused.value) == (
        "unknown model 'minilmx': no preset of that name (did you mean 'minilm-bi'?) and no such folder"
    )


def test_a_mistyped_family_is_named_even_beside_a_model_without_weights():
    """bm25 keeps its family whatever `family` says, but a family that does not exist is refused
    first, naming every family."""
    with pytest.raises(UserError) as refused:
        model_family("bm25", load_config(None), family="yes-nope")
    assert str(refused.value) == (
        "unknown reranker family 'yes-nope'; known: listwise-last-token, cross-encoder, yes-no, "
        "one-zero, bi-encoder, first-stage-order"
    )


# --- registry.py --------------------------------------------------------------------------------


class _Recorded:
    """Stands in for a family's class: keeps what `load_reranker` built it with."""

    family = "recorded"

    def __init__(self, checkpoint=None, device=None, dtype=None, **given) -> None:
        self.given = given


@pytest.mark.parametrize(
    ("family", "runs_own_code"),
    [
        ("listwise-last-token", False),
        ("cross-encoder", True),
        ("yes-no", True),
        ("one-zero", True),
        ("bi-encoder", True),
    ],
)
def test_only_the_families_that_may_run_a_repositorys_code_are_handed_the_flag(
    tmp_path, monkeypatch, family, runs_own_code
):
    """cross-encoder, yes-no, one-zero and bi-encoder models may ship code (their class is given
    trust_remote_code as asked); the listwise class never is (it takes no such argument)."""
    import dataclasses

    from rerank_eval.rerankers import load_reranker, registry

    declared = dataclasses.replace(registry.FAMILIES[family], implementation=f"{__name__}:_Recorded")
    monkeypatch.setitem(registry.FAMILIES, family, declared)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["Qwen3ForCausalLM"]}))
    built = load_reranker(str(folder), family=family, trust_remote_code=True)
    assert isinstance(built, _Recorded)
    assert set(built.given) == ({"settings", "trust_remote_code"} if runs_own_code else {"settings"})
    if runs_own_code:
        assert built.given["trust_remote_code"] is True


def test_one_zero_takes_no_instruction_and_bm25_no_setting(tmp_path):
    """Only yes-no models take an instruction (one-zero's prompt has no place for one), and the
    first stage's order takes no setting at all: both refused before anything loads."""
    from rerank_eval.rerankers import load_reranker

    folder = tmp_path / "lm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["Qwen3ForCausalLM"]}))
    with pytest.raises(UserError) as refused:
        load_reranker(str(folder), family="one-zero", instruction="judge")
    assert str(refused.value) == (
        "unknown setting 'instruction' for family one-zero (accepted: max_batch_tokens, max_length)"
    )
    with pytest.raises(UserError) as refused:
        load_reranker("bm25", max_length=5)
    assert str(refused.value) == "unknown setting 'max_length' for family first-stage-order (accepted: none)"


# --- settings.py --------------------------------------------------------------------------------


def test_listwise_defaults_are_v3s_procedure_with_device_choices_left_open():
    """Unset, the listwise settings are jina-reranker-v3's published procedure (queries of 512
    tokens, documents of 2,048, blocks of 125 with the query counted twice), the fused norms and the
    trimmed last layer on, and every device-dependent choice left to the device (None)."""
    from dataclasses import asdict

    from rerank_eval.rerankers.settings import ListwiseSettings

    assert asdict(ListwiseSettings()) == {
        "max_query_length": 512,
        "max_doc_length": 2048,
        "block_size": 125,
        "block_query_copies": 2,
        "context_length": None,
        "instruction": None,
        "max_batch_tokens": None,
        "fused_rms_norm": True,
        "trim_last_layer": True,
        "compile_elementwise": None,
        "pad_multiple": None,
        "pack_blocks": None,
    }


def test_a_text_setting_takes_a_decimal_number_as_its_text():
    """A number is taken as its text, a decimal one as much as a whole one (YAML reads `1.5` as a
    float)."""
    from rerank_eval.rerankers.settings import InstructedSettings, read_settings

    assert read_settings(InstructedSettings, {"instruction": 1.5}, "yes-no").instruction == "1.5"


def test_an_instruction_holding_a_special_string_anywhere_is_refused():
    """A special string in the middle or at the end of an instruction is refused as much as one at
    its start; the refusal names the string."""
    from rerank_eval.rerankers.listwise.procedure import SPECIAL_STRINGS
    from rerank_eval.rerankers.settings import ListwiseSettings

    for special in SPECIAL_STRINGS:
        for instruction in (f"{special} rank", f"rank {special} these", f"rank {special}"):
            with pytest.raises(UserError) as refused:
                ListwiseSettings(instruction=instruction)
            assert str(refused.value) == (
                f"setting instruction of family listwise-last-token holds {special}, one of the "
                f"prompt's special strings"
            )


# --- base.py ------------------------------------------------------------------------------------


def test_score_by_first_stage_rank_gives_python_floats_best_first():
    """`score` presents the documents in their first-stage order (rank 0 first), so the first
    stage's order scores 3, 2, 1 for three documents, each a Python float."""
    from rerank_eval.rerankers.first_stage_order import FirstStageOrder

    scores = FirstStageOrder().score("q", ["a", "b", "c"])
    assert scores == [3.0, 2.0, 1.0]
    assert all(type(score) is float for score in scores)


def test_a_family_that_declares_nothing_more_takes_the_base_defaults():
    """One query per call, its scores its own, its description as its score identity, no batching
    to key, no smaller batch to retry with, and an out-of-memory message naming the first three
    queries of the batch."""
    import numpy as np

    from rerank_eval.rerankers.base import Reranker, RerankRequest

    class Plain(Reranker):
        family = "plain"

        def score_batch(self, requests):
            return [np.zeros(len(r.texts), dtype=np.float32) for r in requests]

        def describe(self):
            return {"family": self.family, "model": "plain"}

    plain = Plain()
    assert (plain.queries_per_call, plain.scores_its_own) == (1, True)
    assert plain.score_identity() == {"family": "plain", "model": "plain"}
    assert plain.batching() == {}
    assert plain.shrink_batch_budget() is False
    requests = [RerankRequest(f"q{i}", "query", (), (), ()) for i in range(1, 5)]
    assert str(plain.out_of_memory_error(requests)) == (
        "out of GPU memory scoring query q1, q2, q3 even with the smallest batch"
    )


def test_the_forward_hook_runs_before_each_forward_pass():
    """A hook set by the runner is called by `before_forward` (a stop request raises there); with
    none set, nothing happens."""
    from rerank_eval.rerankers.first_stage_order import FirstStageOrder

    calls = []
    reranker = FirstStageOrder()
    reranker.before_forward()
    reranker.forward_hook = lambda: calls.append("hook")
    reranker.before_forward()
    reranker.before_forward()
    assert calls == ["hook", "hook"]


# --- listwise/model.py --------------------------------------------------------------------------


def test_forward_lengths_round_to_64_on_cuda_and_to_nothing_elsewhere():
    """cuDNN's per-length plans make CUDA round forward lengths up to 64 tokens; a CPU, or any other
    device, pads nothing (a multiple of 1)."""
    import torch

    from rerank_eval.rerankers.listwise.model import default_pad_multiple

    assert default_pad_multiple(torch.device("cuda")) == 64
    assert default_pad_multiple(torch.device("cuda", 1)) == 64
    assert default_pad_multiple(torch.device("cpu")) == 1
    assert default_pad_multiple(torch.device("meta")) == 1


def test_the_projector_is_linear_relu_linear_with_biases_only_where_stored():
    """Weights without biases give layers without them; with biases, each layer adds its own; the
    ReLU between them zeroes the negative half: x = (1, -2), W1 = [[1, 0], [0, 1], [1, 1]],
    b1 = (0, 0, 3), W2 = [[1, 1, 1]], b2 = (10): W1 x = (1, -2, -1), plus b1 (1, -2, 2), ReLU
    (1, 0, 2), W2 gives 3, plus b2 13; without biases ReLU (1, 0, 0) gives 1."""
    import torch

    from rerank_eval.rerankers.listwise.model import Projector

    first = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    second = torch.tensor([[1.0, 1.0, 1.0]])
    x = torch.tensor([[1.0, -2.0]])
    bare = Projector({"projector.0.weight": first, "projector.2.weight": second})
    assert [name for name, _ in bare.named_parameters()] == ["layers.0.weight", "layers.2.weight"]
    assert bare(x).tolist() == [[1.0]]
    biased = Projector(
        {
            "projector.0.weight": first,
            "projector.0.bias": torch.tensor([0.0, 0.0, 3.0]),
            "projector.2.weight": second,
            "projector.2.bias": torch.tensor([10.0]),
        }
    )
    assert biased(x).tolist() == [[13.0]]


def test_a_checkpoint_lacking_one_projector_layer_is_refused_naming_it(tmp_path):
    """The first projector layer alone is no projector: the refusal names the missing weight."""
    import torch
    from safetensors.torch import save_file

    from rerank_eval.models.checkpoint import Checkpoint
    from rerank_eval.rerankers.listwise.model import load_projector_weights

    save_file(
        {"projector.0.weight": torch.ones(2, 2), "norm.weight": torch.ones(2)},
        str(tmp_path / "a.safetensors"),
    )
    with pytest.raises(UserError) as refused:
        load_projector_weights(Checkpoint(tmp_path, "tiny", None, None))
    assert str(refused.value) == (
        "checkpoint tiny lacks projector weights (projector.2.weight); a listwise last-token "
        "checkpoint stores them beside the backbone"
    )


def test_a_folder_without_safetensors_files_says_so(tmp_path):
    """No weights file at all is said as such, not as two missing projector layers."""
    from rerank_eval.models.checkpoint import Checkpoint
    from rerank_eval.rerankers.listwise.model import load_projector_weights

    with pytest.raises(UserError) as refused:
        load_projector_weights(Checkpoint(tmp_path, "empty", None, None))
    assert str(refused.value) == (
        "checkpoint empty lacks projector weights (no .safetensors file); a listwise last-token "
        "checkpoint stores them beside the backbone"
    )


def test_packing_is_the_default_under_either_flashattention_and_no_other_attention():
    """FlashAttention 2 and 3 take packed sequences' boundaries (their varlen kernels), so blocks
    are packed by default under them; SDPA and eager attention pad instead."""
    from rerank_eval.rerankers.listwise.model import VARLEN_ATTENTIONS

    assert VARLEN_ATTENTIONS == {"flash_attention_2", "flash_attention_3"}
