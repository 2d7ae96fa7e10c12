"""Which family a model runs as and how the families that need no model or one projection score:
`rerankers/identify.py`, `rerankers/recognize.py`, `rerankers/first_stage_order.py`, the bi-encoder's
recorded embedding and lengths, the dense projections' loading, and the fused-kernel choice.

Each rule is checked on config files written here, or on the tiny checkpoints of `tests/`; the
expected values are written out by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rerank_eval.config.reader import load_config
from rerank_eval.errors import UserError
from rerank_eval.first_stage.dense import jina_kernels, kernel_choice
from rerank_eval.first_stage.dense.checkpoint_files import DenseSpec
from rerank_eval.first_stage.dense.projection import Projection, load_projections, project
from rerank_eval.rerankers import load_reranker, recognize
from rerank_eval.rerankers.base import RerankRequest
from rerank_eval.rerankers.first_stage_order import FirstStageOrder
from rerank_eval.rerankers.identify import model_family
from tests.checkpoints import build_bi_encoder
from tests.dense_checkpoints import build_sentence_transformers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _folder(root: Path, name: str, files: dict[str, object]) -> Path:
    """A folder holding `files` (name: JSON value, or text as it is)."""
    folder = root / name
    folder.mkdir()
    for file, value in files.items():
        text = value if isinstance(value, str) else json.dumps(value)
        (folder / file).write_text(text, encoding="utf-8")
    return folder


# --- identify.py --------------------------------------------------------------------------------


def test_a_presets_hub_id_runs_with_that_presets_settings_and_is_named_by_it():
    """A Hub id that is a preset's model is that preset's family, with its settings; a family that
    disagrees is refused naming the preset."""
    found = model_family("BAAI/bge-reranker-v2-m3", load_config(None))
    assert found.family == "cross-encoder"
    assert found.source == "BAAI/bge-reranker-v2-m3"
    assert found.preset_settings == {"max_length": 1024, "max_batch_tokens": 65536}
    with pytest.raises(UserError) as raised:
        model_family("sentence-transformers/all-MiniLM-L6-v2", load_config(None), family="cross-encoder")
    assert str(raised.value).startswith(
        "model 'sentence-transformers/all-MiniLM-L6-v2' is a bi-encoder model "
        "(the model of preset minilm-bi); family cross-encoder would run it as another kind"
    )


def test_a_preset_is_its_own_family_with_its_models_source_and_bm25_has_none():
    """A preset's source is its Hub id, not its name; bm25 has no model and keeps its family whatever
    `family` says."""
    minilm = model_family("minilm-bi", load_config(None))
    assert (minilm.family, minilm.source, minilm.preset_settings) == (
        "bi-encoder",
        "sentence-transformers/all-MiniLM-L6-v2",
        {"max_length": 256},
    )
    bm25 = model_family("bm25", load_config(None), family="yes-no")
    assert (bm25.family, bm25.source) == ("first-stage-order", None)


def test_a_folder_nothing_recognises_runs_as_the_family_given_from_that_folder(tmp_path):
    """`family` names what nothing else does: the folder itself is the source."""
    folder = _folder(tmp_path, "plain", {"config.json": {"architectures": ["Qwen3ForCausalLM"]}})
    found = model_family(str(folder), load_config(None), family="one-zero")
    assert (found.family, found.source, found.preset_settings) == ("one-zero", str(folder), {})


def test_a_classifier_saved_in_sentence_transformers_layout_is_a_cross_encoder(tmp_path):
    """Families are asked in their order of registration: a sequence classifier's config wins over a
    modules.json that names no model type."""
    folder = _folder(
        tmp_path,
        "both",
        {"config.json": {"architectures": ["BertForSequenceClassification"]}, "modules.json": []},
    )
    assert model_family(str(folder), load_config(None)).family == "cross-encoder"


def test_cannot_tell_names_every_family_and_every_preset(tmp_path):
    """The refusal lists what `family` may be and the presets there are, in full."""
    folder = _folder(tmp_path, "unknown", {"config.json": {"architectures": ["Qwen3ForCausalLM"]}})
    config = load_config(None)
    with pytest.raises(UserError) as raised:
        model_family(str(folder), config)
    families = "listwise-last-token, cross-encoder, yes-no, one-zero, bi-encoder, first-stage-order"
    assert str(raised.value) == (
        f"cannot tell which family model {str(folder)!r} belongs to; pass family ({families}) "
        f"or use a preset ({', '.join(sorted(config.models))})"
    )


def test_a_name_is_a_mistyped_preset_from_a_ratio_of_three_quarters(monkeypatch, tmp_path):
    """'minilm' (ratio 0.8 to 'minilm-bi') is a typo; 'minlm' (0.714) is not one, and is said to be
    neither a folder nor a Hub id; a file of a typo's name is no typo either."""
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    with pytest.raises(UserError) as raised:
        model_family("minilm", config)
    assert str(raised.value) == (
        "unknown model 'minilm': no preset of that name (did you mean 'minilm-bi'?) and no such folder"
    )
    with pytest.raises(UserError) as raised:
        model_family("minlm", config)
    assert str(raised.value).startswith("model 'minlm' is neither a checkpoint directory (no folder ")
    (tmp_path / "minilm").write_text("not a model")
    with pytest.raises(UserError) as raised:
        model_family("minilm", config)
    assert str(raised.value).startswith("model 'minilm' is neither a checkpoint directory (")
    assert "is a file" in str(raised.value)


# --- recognize.py -------------------------------------------------------------------------------


def test_any_sequence_classifier_head_is_recognised_by_its_first_name(tmp_path):
    """bge-reranker-v2-m3 is an XLMRobertaForSequenceClassification: any `*ForSequenceClassification`
    counts, and the first one named is the one said."""
    folder = _folder(
        tmp_path,
        "xlmr",
        {
            "config.json": {
                "architectures": ["XLMRobertaForSequenceClassification", "BertForSequenceClassification"]
            }
        },
    )
    assert recognize.sequence_classifier(folder) == "its config names XLMRobertaForSequenceClassification"


def test_jina_for_ranking_is_recognised_wherever_it_is_named(tmp_path):
    """The architecture counts when it is not the first listed."""
    folder = _folder(tmp_path, "jina", {"config.json": {"architectures": ["Qwen3Model", "JinaForRanking"]}})
    assert recognize.jina_for_ranking(folder) == "its config names JinaForRanking"


EMBEDDER = "it is a sentence-transformers embedding model (modules.json)"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (None, EMBEDDER),  # no type: an embedder
        ({"model_type": "SentenceTransformer"}, EMBEDDER),
        ({"prompts": {}}, EMBEDDER),  # no type named
        ({"model_type": "CrossEncoder"}, None),
    ],
)
def test_a_sentence_transformers_folder_is_an_embedder_unless_it_names_another_type(
    tmp_path, settings, expected
):
    """modules.json, and config_sentence_transformers.json absent or naming SentenceTransformer (or no
    type at all): a bi-encoder; another type: not recognised."""
    files: dict[str, object] = {"modules.json": []}
    if settings is not None:
        files["config_sentence_transformers.json"] = settings
    assert recognize.sentence_transformers_embedder(_folder(tmp_path, "st", files)) == expected


@pytest.mark.parametrize(
    ("text", "problem"), [("{not json", "is not valid JSON"), ("[]", "expected a JSON object")]
)
def test_sentence_transformers_settings_that_cannot_be_read_are_said_so(tmp_path, text, problem):
    """Not "cannot tell which family": the file that is wrong, and how, even without `family`."""
    folder = _folder(tmp_path, "st", {"modules.json": [], "config_sentence_transformers.json": text})
    with pytest.raises(UserError) as raised:
        model_family(str(folder), load_config(None))
    assert str(raised.value).startswith("sentence-transformers settings ")
    assert str(raised.value).endswith(problem)
    assert str(folder / "config_sentence_transformers.json") in str(raised.value)


# --- first_stage_order.py -----------------------------------------------------------------------


def test_first_stage_order_returns_the_first_stages_scores_exactly_or_count_minus_rank():
    """Scores kept exact (float64); without them, count minus the 0-based rank (3, 2, 1 for ranks 0,
    1, 2), in presentation order."""
    exact = 0.1 + 0.2  # not a float32 value
    with_scores = RerankRequest("q", "query", ("a", "b"), ("x", "y"), (1, 0), (exact, 7.5))
    without = RerankRequest("q", "query", ("a", "b", "c"), ("x", "y", "z"), (2, 0, 1))
    got = FirstStageOrder().score_batch([with_scores, without])
    assert got[0].dtype == np.float64 and got[0].tolist() == [exact, 7.5]
    assert got[1].tolist() == [1.0, 3.0, 2.0]


def test_ties_in_the_first_stages_own_scores_are_not_warned_of(capsys):
    """Ties among a model's scores are warned of; the first stage's own ties are no news."""
    from rerank_eval.pipeline.execute import _warn_about_scoring
    from rerank_eval.pipeline.score import RerankOutcome

    _warn_about_scoring(
        "nq", RerankOutcome({}, ties=2, scored_queries=1, resumed_queries=0), FirstStageOrder()
    )
    assert capsys.readouterr().err == ""


# --- bi_encoder.py ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentence_transformers_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bi")
    return build_sentence_transformers(
        root / "st", pooling="cls", normalize=False, max_seq_length=16, similarity_fn_name="dot"
    )


def test_a_bi_encoder_reads_its_length_from_the_checkpoint_unless_one_is_given(sentence_transformers_folder):
    """max_seq_length (16 here) is the length where no max_length is set; a set one wins."""
    assert load_reranker(str(sentence_transformers_folder), device="cpu").max_length == 16
    assert load_reranker(str(sentence_transformers_folder), device="cpu", max_length=8).max_length == 8


def test_a_bi_encoders_score_head_and_embedding_say_how_it_embeds(sentence_transformers_folder, tmp_path):
    """The score head names the similarity, pooling and where they come from; the recorded embedding
    holds no length (that is a setting); without sentence-transformers files, 256 tokens."""
    own = load_reranker(str(sentence_transformers_folder), device="cpu")
    assert own.score_head == (
        "inner product of cls-pooled embeddings (the checkpoint's sentence-transformers modules)"
    )
    assert "max_length" not in own.describe()["embedding"]
    plain = load_reranker(str(build_bi_encoder(tmp_path / "plain")), device="cpu", family="bi-encoder")
    assert plain.score_head == "cosine of mean-pooled embeddings (the family's default)"
    assert plain.max_length == 256  # the family's length, within the 512 its model reads


def test_a_bi_encoder_scores_each_request_with_its_own_query(sentence_transformers_folder):
    """In one batch, each query's candidates are scored against that query (as when scored alone);
    a request without candidates gets an empty float32 array like the others' float32 scores."""
    reranker = load_reranker(str(sentence_transformers_folder), device="cpu")
    texts = ("calcium keeps bones strong", "the lazy dog")
    empty, first, second = reranker.score_batch(
        [
            RerankRequest("q0", "bones", (), (), ()),
            RerankRequest("q1", "bones", ("a", "b"), texts, (0, 1)),
            RerankRequest("q2", "a quick brown fox", ("a", "b"), texts, (0, 1)),
        ]
    )
    assert empty.dtype == np.float32 and empty.shape == (0,)
    assert first.dtype == np.float32 and second.dtype == np.float32
    np.testing.assert_allclose(first, reranker.score("bones", list(texts)), rtol=1e-5)
    np.testing.assert_allclose(second, reranker.score("a quick brown fox", list(texts)), rtol=1e-5)
    assert np.abs(first - second).max() > 0.1  # the queries do score differently


def test_an_older_layouts_transformer_subfolder_is_the_model_folder(tmp_path):
    """sentence-transformers 1 saved the transformer in 0_Transformer/: the model is read there."""
    folder = build_sentence_transformers(tmp_path / "old", pooling="mean", normalize=True)
    inner = folder / "0_Transformer"
    inner.mkdir()
    for item in list(folder.iterdir()):
        if item.is_file() and item.name not in ("modules.json", "config_sentence_transformers.json"):
            item.rename(inner / item.name)
    modules = json.loads((folder / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (folder / "modules.json").write_text(json.dumps(modules))
    reranker = load_reranker(str(folder), device="cpu")
    assert reranker.model_folder() == inner
    assert len(reranker.score("bones", ["calcium", "vitamin"])) == 2


# --- projection.py ------------------------------------------------------------------------------


def _dense_module(
    folder: Path, spec: dict, weights: dict[str, torch.Tensor], file: str = "model.safetensors"
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(spec))
    if file.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(weights, str(folder / file))
    else:
        torch.save(weights, str(folder / file))


IDENTITY_2 = {"in_features": 2, "out_features": 2, "bias": False,
              "activation_function": "torch.nn.modules.linear.Identity"}  # fmt: skip


def test_a_square_residual_adds_the_input_itself():
    """use_residual with in = out: activation(W x) + x. W = [[1, 2], [0, 1]], x = (1, 1): (4, 2)."""
    projection = Projection(DenseSpec(2, 2, bias=False, activation="Identity", residual=True))
    assert projection.residual is None
    with torch.no_grad():
        projection.linear.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    assert project(torch.tensor([[1.0, 1.0]]), [projection]).tolist() == [[4.0, 2.0]]


def test_safetensors_weights_are_read_before_pytorch_model_bin(tmp_path):
    """Both files present: model.safetensors is the one applied (sentence-transformers' order)."""
    module = tmp_path / "2_Dense"
    _dense_module(module, IDENTITY_2, {"linear.weight": torch.eye(2) * 2})
    torch.save({"linear.weight": torch.eye(2) * 3}, str(module / "pytorch_model.bin"))
    (projection,) = load_projections(tmp_path, ["2_Dense"], "enc", "cpu")
    assert project(torch.tensor([[1.0, -1.0]]), [projection]).tolist() == [[2.0, -2.0]]


def test_half_precision_weights_run_in_float32(tmp_path):
    """Weights saved in float16 are applied in float32, as sentence-transformers applies them."""
    _dense_module(tmp_path / "2_Dense", IDENTITY_2, {"linear.weight": torch.eye(2, dtype=torch.float16)})
    (projection,) = load_projections(tmp_path, ["2_Dense"], "enc", "cpu")
    assert projection.linear.weight.dtype == torch.float32
    assert project(torch.tensor([[0.5, 2.0]]), [projection]).dtype == torch.float32


def test_a_pickled_object_in_pytorch_model_bin_is_not_unpickled(tmp_path):
    """pytorch_model.bin is read with weights_only: an arbitrary pickled object is refused as
    unreadable, never loaded, in one line without torch's advice."""
    weights = {"linear.weight": torch.eye(2), "extra": argparse.Namespace(x=1)}
    _dense_module(tmp_path / "2_Dense", IDENTITY_2, weights, file="pytorch_model.bin")
    with pytest.raises(UserError) as raised:
        load_projections(tmp_path, ["2_Dense"], "enc", "cpu")
    message = str(raised.value)
    assert message.startswith(
        f"cannot read the weights of Dense module {tmp_path / '2_Dense' / 'pytorch_model.bin'}: "
    )
    assert "UnpicklingError" in message and "\n" not in message
    # torch's advice (to load it unsafely, in terminal colours) is left out: its first sentence only
    assert "trust" not in message and "\x1b" not in message


def test_a_pytorch_model_bin_of_no_named_tensors_is_said_to_be_so(tmp_path):
    """A file that loads but holds a list, not a mapping of names to tensors: said as such."""
    _dense_module(tmp_path / "2_Dense", IDENTITY_2, {}, file="pytorch_model.bin")
    path = tmp_path / "2_Dense" / "pytorch_model.bin"
    torch.save([torch.eye(2)], str(path))
    with pytest.raises(UserError) as raised:
        load_projections(tmp_path, ["2_Dense"], "enc", "cpu")
    assert str(raised.value) == f"the weights of Dense module {path} are not named tensors"


def test_weights_missing_from_a_dense_module_are_refused(tmp_path):
    """A module whose config asks for a bias its weights lack does not load with a bias left unset."""
    _dense_module(tmp_path / "2_Dense", {**IDENTITY_2, "bias": True}, {"linear.weight": torch.eye(2)})
    with pytest.raises(
        UserError, match=r"do not fit its config: Missing key\(s\) in state_dict: \"linear.bias\""
    ):
        load_projections(tmp_path, ["2_Dense"], "enc", "cpu")


# --- kernel_choice.py ---------------------------------------------------------------------------

CPU = torch.device("cpu")


def test_no_word_of_fused_kernels_for_another_architecture_unless_asked(capsys):
    """Not jina-embeddings-v3 (no config): off, and said on stderr only when asked for."""
    for requested in (None, False):
        assert kernel_choice.fused_kernels_chosen("enc", None, CPU, torch.float32, requested) is False
    assert capsys.readouterr() == ("", "")
    assert kernel_choice.fused_kernels_chosen("enc", None, CPU, torch.float32, True) is False
    out, err = capsys.readouterr()
    assert out == "" and err == (
        "fused_kernels: encoder enc is not jina-embeddings-v3's architecture; it runs transformers' modules\n"
    )


def test_kernels_that_fail_by_default_are_said_once_on_stderr(monkeypatch, capsys):
    """By default (compiling where it is the default) a failure turns them off with one line."""
    monkeypatch.setattr(kernel_choice, "compile_by_default", lambda device: True)
    monkeypatch.setattr(jina_kernels, "compile_failure", lambda *args: "InductorError: no compiler")
    assert kernel_choice.fused_kernels_chosen("enc", object(), CPU, torch.float32, None) is False
    assert capsys.readouterr().err == (
        "torch.compile cannot build kernels on cpu (InductorError: no compiler); the encoder runs "
        "transformers' modules\n"
    )


def test_ranks_decide_packing_together(monkeypatch):
    """Under torchrun, another rank whose varlen kernel fails stops packing on this one too."""
    from rerank_eval.runtime import distributed

    monkeypatch.setattr(jina_kernels, "packing_failure", lambda *args: None)  # this rank can pack
    monkeypatch.setattr(distributed, "all_gathered_objects", lambda value: [value, "rank 1: no varlen"])
    with pytest.raises(UserError) as raised:
        kernel_choice.packing_chosen("enc", object(), CPU, torch.float32, True, True)
    assert str(raised.value) == "packed_sequences cannot run on cpu: rank 1: no varlen"
    monkeypatch.setattr(distributed, "all_gathered_objects", lambda value: [value, None])
    assert kernel_choice.packing_chosen("enc", object(), CPU, torch.float32, True, True) is True


def test_packing_by_default_on_cuda_wherever_the_fused_kernels_run(monkeypatch, capsys):
    """Unset, packing is on where the fused kernels run on CUDA and its trial passes; off on CPUs
    and without the fused kernels (no trial run, no word), off when set so."""
    from rerank_eval.runtime import distributed

    cuda, trials = torch.device("cuda"), []
    monkeypatch.setattr(distributed, "all_gathered_objects", lambda value: [value])
    monkeypatch.setattr(jina_kernels, "packing_failure", lambda *args: trials.append(args[1]))
    assert kernel_choice.packing_chosen("enc", object(), cuda, torch.bfloat16, True, None) is True
    assert trials == [cuda]
    for device, fused, requested in ((CPU, True, None), (cuda, False, None), (cuda, True, False)):
        chosen = kernel_choice.packing_chosen("enc", object(), device, torch.bfloat16, fused, requested)
        assert chosen is False
    assert trials == [cuda] and capsys.readouterr() == ("", "")


def test_packing_that_fails_by_default_is_said_once_on_stderr(monkeypatch, capsys):
    """By default a failing trial leaves padded batches with one line; asked for, it is an error."""
    from rerank_eval.runtime import distributed

    cuda = torch.device("cuda")
    monkeypatch.setattr(distributed, "all_gathered_objects", lambda value: [value])
    monkeypatch.setattr(jina_kernels, "packing_failure", lambda *args: "ImportError: no varlen")
    assert kernel_choice.packing_chosen("enc", object(), cuda, torch.bfloat16, True, None) is False
    assert capsys.readouterr() == (
        "",
        "packed_sequences cannot run on cuda (ImportError: no varlen); the encoder runs padded batches\n",
    )
    with pytest.raises(UserError, match=r"^packed_sequences cannot run on cuda: ImportError: no varlen$"):
        kernel_choice.packing_chosen("enc", object(), cuda, torch.bfloat16, True, True)
