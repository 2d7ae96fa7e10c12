"""Cross-encoder, yes/no, 1/0 and bi-encoder families on tiny random checkpoints.

Expected token ids and scores are computed here the straightforward way: templates written out
from the specification, full-vocabulary forward passes one pair at a time.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.errors import UserError
from rerank_eval.rerankers import load_reranker
from rerank_eval.rerankers.base import DatasetContext, RerankRequest
from tests import builders
from tests.checkpoints import (
    build_bi_encoder,
    build_causal_lm,
    build_cross_encoder,
    build_listwise_checkpoint,
)

QUERY = "what causes scurvy"
DOCS = [
    "scurvy is caused by a lack of vitamin c",
    "the lazy dog sleeps",
    "bones need calcium and vitamin d " * 40,
    "heart attacks and aspirin",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {
        "ce1": build_cross_encoder(root / "ce1", num_labels=1),
        "ce2": build_cross_encoder(root / "ce2", num_labels=2, seed=1),
        "lm": build_causal_lm(root / "lm"),
        "bi": build_bi_encoder(root / "bi"),
        "listwise": build_listwise_checkpoint(root / "listwise"),
    }


def requests(queries: list[str]) -> list[RerankRequest]:
    return [
        RerankRequest(f"q{i}", q, tuple(map(str, range(len(DOCS)))), tuple(DOCS), tuple(range(len(DOCS))))
        for i, q in enumerate(queries)
    ]


def assert_batching_invariant(folder: Path, family: str) -> None:
    queries = [QUERY, "vitamin d bones", "aspirin"]
    batched = load_reranker(str(folder), family=family, max_batch_tokens=100_000).score_batch(
        requests(queries)
    )
    single = load_reranker(str(folder), family=family, max_batch_tokens=1)
    for request, scores in zip(requests(queries), batched):
        assert scores.dtype == np.float32
        assert np.abs(scores - single.score_batch([request])[0]).max() <= 1e-5


# -- cross-encoder ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["ce1", "ce2"])
def test_cross_encoder_scores_are_the_positive_logit(models, variant):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = models[variant]
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(folder), attn_implementation="eager"
    ).eval()
    expected = []
    for doc in DOCS:
        inputs = tokenizer(QUERY, doc, truncation="only_second", max_length=16, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits[0]
        expected.append(float(logits[0] if model.config.num_labels == 1 else logits[1]))
    reranker = load_reranker(str(folder), max_length=16)  # a *ForSequenceClassification dir needs no flag
    assert reranker.family == "cross-encoder"
    assert np.abs(np.array(reranker.score(QUERY, DOCS)) - expected).max() <= 1e-5


def test_cross_encoder_batching_invariant(models):
    assert_batching_invariant(models["ce1"], "cross-encoder")


def test_cross_encoder_query_longer_than_max_length(models):
    reranker = load_reranker(str(models["ce1"]), max_length=6)
    scores = reranker.score("scurvy vitamin c lack calcium bones heart aspirin dog", DOCS[:2])
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
    assert reranker.runtime_stats()["pairs_truncated_longest_first"] == 2


@pytest.mark.parametrize("declared", ["nothing", True], ids=["absent", "true"])
@pytest.mark.parametrize("layout", ["bert", "xlm-roberta"])
def test_max_length_is_capped_at_the_models_positions_where_the_tokenizer_declares_none(
    tmp_path, layout, declared
):
    """A fine-tuned checkpoint saved without model_max_length and with fewer positions than the
    default 512: a long pair is cut to the position table, not sent past it (an index error);
    XLM-R numbers its positions from after the padding index (42 entries, 40 read). A limit of
    `true` declares none (it read as one token)."""
    from transformers import (
        BertForSequenceClassification,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    from tests.checkpoints import _tiny_bert_config, build_wordpiece_tokenizer
    from tests.dense_checkpoints import build_xlmr_tokenizer

    folder = tmp_path / layout
    folder.mkdir()
    torch.manual_seed(0)
    if layout == "bert":
        tokenizer = build_wordpiece_tokenizer(folder)
        config = _tiny_bert_config(len(tokenizer), num_labels=1)
        config.max_position_embeddings = 40
        BertForSequenceClassification(config).save_pretrained(str(folder))
    else:
        tokenizer = build_xlmr_tokenizer(folder)
        config = XLMRobertaConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=42, pad_token_id=1, num_labels=1,
        )  # fmt: skip
        XLMRobertaForSequenceClassification(config).save_pretrained(str(folder))
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    del settings["model_max_length"]
    if declared is True:
        settings["model_max_length"] = True
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    reranker = load_reranker(str(folder), family="cross-encoder")
    assert reranker.tokenizer.model_max_length in (True, int(1e30)) and reranker.max_length == 40
    scores = reranker.score(QUERY, DOCS)  # DOCS[2] is far longer than 40 tokens
    assert len(scores) == len(DOCS) and all(math.isfinite(score) for score in scores)


def test_a_decoder_classifier_without_a_pad_token_id_scores_batches_as_pairs_alone(models, tmp_path):
    """A causal LM converted to *ForSequenceClassification (as Qwen3-Reranker and mxbai are for
    sentence-transformers) often has no pad_token_id in its config: batches are padded with the
    tokenizer's padding token, and each pair scores what it scores alone; with no padding token
    anywhere the checkpoint is refused in one line."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path / "decoder-classifier"
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(models["lm"]), num_labels=1)
    model.config.pad_token_id = None
    model.save_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(models["lm"]))
    tokenizer.save_pretrained(str(folder))
    model.eval()
    expected = []
    for doc in DOCS:  # one pair at a time: no padding, so no pad_token_id is needed
        inputs = tokenizer(QUERY, doc, truncation="only_second", max_length=64, return_tensors="pt")
        with torch.no_grad():
            expected.append(float(model(**inputs).logits[0, 0]))
    reranker = load_reranker(str(folder), max_length=64, max_batch_tokens=100_000)
    assert reranker.family == "cross-encoder"
    assert np.abs(np.array(reranker.score(QUERY, DOCS)) - expected).max() <= 1e-5
    config = json.loads((folder / "config.json").read_text())
    (folder / "tokenizer_config.json").write_text(
        json.dumps({**json.loads((folder / "tokenizer_config.json").read_text()), "pad_token": None})
    )
    assert config.get("pad_token_id") is None
    with pytest.raises(UserError, match=r"names no padding token .* set pad_token_id in its config\.json$"):
        load_reranker(str(folder))


# -- yes/no and 1/0 causal LMs ------------------------------------------------------------------------

YES_NO_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
YES_NO_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
MXBAI_PREFIX = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n"
)
MXBAI_TASK = (
    "You are a search relevance expert who evaluates how well documents match search queries. For each "
    "query-document pair, carefully analyze the semantic relationship between them, then provide your "
    "binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
)
MXBAI_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"


def yes_no_ids(tokenizer, query: str, doc: str, max_length: int) -> list[int]:
    def enc(text):
        return tokenizer.encode(text, add_special_tokens=False)

    prefix, suffix = enc(YES_NO_PREFIX), enc(YES_NO_SUFFIX)
    body = enc(f"<Instruct>: {INSTRUCTION}\n<Query>: {query}\n<Document>: {doc}")
    return prefix + body[: max_length - len(prefix) - len(suffix)] + suffix


def one_zero_ids(tokenizer, query: str, doc: str, max_length: int) -> list[int]:
    def enc(text):
        return tokenizer.encode(text, add_special_tokens=False)

    query_ids = enc(f"query: {query}")[: max_length * 3 // 4]
    fixed = len(enc(MXBAI_PREFIX)) + 2 * len(enc("\n")) + len(enc(MXBAI_TASK)) + len(enc(MXBAI_SUFFIX))
    doc_cap = max(0, min(max_length // 4, max_length - fixed - len(query_ids)))
    doc_ids = enc(f"document: {doc}")[:doc_cap]
    return (
        enc(MXBAI_PREFIX) + query_ids + enc("\n") + doc_ids + enc("\n") + enc(MXBAI_TASK) + enc(MXBAI_SUFFIX)
    )


@pytest.mark.parametrize("max_length", [8192, 120])
def test_yes_no_token_ids(models, max_length):
    reranker = load_reranker(str(models["lm"]), family="yes-no", max_length=max_length)
    encoded = reranker.encode_pairs([QUERY] * len(DOCS), DOCS)
    expected = [yes_no_ids(reranker.tokenizer, QUERY, d, max_length) for d in DOCS]
    assert [e["input_ids"] for e in encoded] == expected
    if max_length == 120:
        assert all(len(ids) <= 120 for ids in expected) and max(len(ids) for ids in expected) == 120


@pytest.mark.parametrize("room", ["plenty", "quarter", "left"])
def test_one_zero_token_ids(models, room):
    tokenizer = load_reranker(str(models["lm"]), family="one-zero").tokenizer
    without_doc = len(one_zero_ids(tokenizer, QUERY, "", 8192)) - len(tokenizer.encode("document: "))
    # plenty: nothing cut; quarter: max_length/4 binds for the long document; left: the room left binds
    max_length = {"plenty": 8192, "quarter": 1200, "left": without_doc + 20}[room]
    reranker = load_reranker(str(models["lm"]), family="one-zero", max_length=max_length)
    encoded = [e["input_ids"] for e in reranker.encode_pairs([QUERY] * len(DOCS), DOCS)]
    assert encoded == [one_zero_ids(tokenizer, QUERY, d, max_length) for d in DOCS]
    long_doc = len(tokenizer.encode(f"document: {DOCS[2]}"))
    kept = len(encoded[2]) - without_doc
    assert kept == {"plenty": long_doc, "quarter": 300, "left": 20}[room]


def test_template_pieces_stay_whole_under_a_small_max_length(models):
    """The templates' fixed pieces are never cut: mxbai's task sentence (far longer than 40 tokens)
    stays whole as in its reference; a yes-no max_length that leaves no room after the template is
    refused in one line (the reference would cut the body to a negative length)."""
    tokenizer = load_reranker(str(models["lm"]), family="one-zero").tokenizer
    assert len(tokenizer.encode(MXBAI_TASK, add_special_tokens=False)) > 40
    reranker = load_reranker(str(models["lm"]), family="one-zero", max_length=40)
    encoded = [e["input_ids"] for e in reranker.encode_pairs([QUERY] * len(DOCS), DOCS)]
    assert encoded == [one_zero_ids(tokenizer, QUERY, d, 40) for d in DOCS]
    template = len(tokenizer.encode(YES_NO_PREFIX + YES_NO_SUFFIX, add_special_tokens=False))
    with pytest.raises(UserError) as excinfo:
        load_reranker(str(models["lm"]), family="yes-no", max_length=template)
    assert str(excinfo.value) == (
        f"max_length {template} leaves no room for the query and document: the yes-no prompt's template "
        f"alone is {template} tokens"
    )


def last_logits(folder: Path, ids: list[int]) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager").eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1]


def test_yes_no_score_is_p_yes_over_no_and_yes(models):
    reranker = load_reranker(str(models["lm"]), family="yes-no")
    tokenizer = reranker.tokenizer
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    expected = []
    for doc in DOCS:
        logits = last_logits(models["lm"], yes_no_ids(tokenizer, QUERY, doc, 8192))
        expected.append(float(torch.softmax(torch.stack([logits[no], logits[yes]]), dim=0)[1]))
    assert np.abs(np.array(reranker.score(QUERY, DOCS)) - expected).max() <= 1e-5


def test_one_zero_score_is_logit_difference(models):
    reranker = load_reranker(str(models["lm"]), family="one-zero")
    tokenizer = reranker.tokenizer
    one, zero = tokenizer.convert_tokens_to_ids("1"), tokenizer.convert_tokens_to_ids("0")
    expected = []
    for doc in DOCS:
        logits = last_logits(models["lm"], one_zero_ids(tokenizer, QUERY, doc, 8192))
        expected.append(float(logits[one] - logits[zero]))
    assert np.abs(np.array(reranker.score(QUERY, DOCS)) - expected).max() <= 1e-5


@pytest.mark.parametrize("family", ["yes-no", "one-zero"])
def test_causal_batching_invariant(models, family):
    assert_batching_invariant(models["lm"], family)


def test_causal_dir_needs_a_family(models):
    with pytest.raises(UserError, match="cannot tell which family"):
        load_reranker(str(models["lm"]))


def test_family_names_what_cannot_be_told_and_must_agree_with_what_can(models, tmp_path):
    """`family` is for models whose family nothing else says; a preset's or a recognised folder's
    own must agree with it (else a bi-encoder would run as a cross-encoder with a random head),
    except a model without weights (bm25), which keeps its order beside the others; a folder of
    sentence-transformers' layout is a bi-encoder with no flag."""
    from tests.dense_checkpoints import build_sentence_transformers

    message = "model 'minilm-bi' is a bi-encoder model (preset minilm-bi); family cross-encoder would run it"
    with pytest.raises(UserError, match=re.escape(message)):
        load_reranker("minilm-bi", family="cross-encoder")
    message = "is a cross-encoder model (its config names BertForSequenceClassification); family bi-encoder"
    with pytest.raises(UserError, match=re.escape(message)):
        load_reranker(str(models["ce1"]), family="bi-encoder")
    assert load_reranker("bm25", family="yes-no").family == "first-stage-order"
    assert load_reranker(str(models["lm"]), family="yes-no").family == "yes-no"  # nothing else says
    assert load_reranker(str(models["ce1"]), family="cross-encoder").family == "cross-encoder"  # agrees
    folder = build_sentence_transformers(tmp_path / "st", pooling="cls", normalize=True)
    assert load_reranker(str(folder)).family == "bi-encoder"
    # sentence-transformers saves a CrossEncoder (a causal reranker's, say) in the same layout, with
    # its type named: not a bi-encoder, so its family is the one given
    settings = folder / "config_sentence_transformers.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "model_type": "CrossEncoder"}))
    with pytest.raises(UserError, match="cannot tell which family model"):
        load_reranker(str(folder))
    # a mistyped family is said as such
    with pytest.raises(UserError, match="unknown reranker family 'crossencoder'"):
        load_reranker("minilm-bi", family="crossencoder")
    # architectures that are no list of names tell no family (it was a traceback on [1]); names in
    # a list still do
    from rerank_eval.config.reader import load_config
    from rerank_eval.rerankers.identify import model_family

    odd = tmp_path / "odd"
    odd.mkdir()
    for architectures in ([1], "BertForSequenceClassification"):
        (odd / "config.json").write_text(json.dumps({"architectures": architectures}))
        with pytest.raises(UserError, match="cannot tell which family model"):
            model_family(str(odd), load_config(None))
    (odd / "config.json").write_text(json.dumps({"architectures": [None, "JinaForRanking"]}))
    assert model_family(str(odd), load_config(None)).family == "listwise-last-token"


def test_a_checkpoint_lacking_the_weights_a_family_scores_with_is_refused(models):
    """A bare encoder (BertModel) run as a cross-encoder would score with a classification head of
    random weights, different at every load; a bi-encoder needs no pooler."""
    with pytest.raises(
        UserError,
        match=(
            r"lacks weights the cross-encoder family scores with \(classifier\.bias, classifier\.weight, "
            r"bert\.pooler\.dense\.bias and 1 more\); they would be random: "
            r"is it a cross-encoder checkpoint\?$"
        ),
    ):
        load_reranker(str(models["bi"]), family="cross-encoder")
    assert load_reranker(str(models["bi"]), family="bi-encoder").family == "bi-encoder"


def test_several_models_with_a_family_for_the_one_that_needs_it(models, tmp_path):
    """`--model bm25 --model DIR --family F`: the baseline keeps its order, DIR runs as F."""
    run_file = builders.write_run(tmp_path / "nq.trec", builders.synthetic_nq()[3])

    def models_run(first: str, second: str, out: Path) -> dict[str, dict]:
        """Each model's manifest record of `--model first --model second --family yes-no`."""
        result = CliRunner().invoke(
            app,
            ["beir", "--datasets", "nq", "--model", first, "--model", second, "--family", "yes-no",
             "--top-k", "3", "--run", f"nq={run_file}", "--out", str(out)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        return {f.name: json.loads((f / "manifest.json").read_text())["model"] for f in out.iterdir()}

    made = models_run("bm25", str(models["lm"]), tmp_path / "out")
    families = {name: model["family"] for name, model in made.items()}
    assert families == {"bm25": "first-stage-order", "lm": "yes-no"}
    # the run's order, not the folders' names, orders export's columns and compare's baseline
    again = tmp_path / "again"
    made = models_run(str(models["lm"]), "bm25", again)
    assert {name: model["position"] for name, model in made.items()} == {"lm": 1, "bm25": 2}
    exported = tmp_path / "export.csv"
    assert CliRunner().invoke(app, ["export", str(again), "--csv", str(exported)]).exit_code == 0
    import pandas as pd

    assert list(pd.read_csv(exported).model.unique()) == [str(models["lm"]), "bm25"]
    compared = CliRunner().invoke(app, ["compare", str(again)])
    assert compared.exit_code == 0 and f"vs {models['lm']}" in " ".join(compared.output.split())
    # a model whose family disagrees is refused before the first one scores anything
    result = CliRunner().invoke(
        app,
        ["beir", "--datasets", "nq", "--model", str(models["lm"]), "--model", "minilm-bi",
         "--family", "yes-no", "--run", f"nq={run_file}", "--out", str(tmp_path / "refused")],
    )  # fmt: skip
    assert result.exit_code == 2 and "model 'minilm-bi' is a bi-encoder model" in result.output
    assert "nq:" not in result.output and not (tmp_path / "refused").exists()


# -- bi-encoder -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "family"), [("bi", "bi-encoder"), ("ce1", "cross-encoder")])
def test_a_long_document_is_cut_without_transformers_warning_of_indexing_errors(
    models, caplog, monkeypatch, model, family
):
    """transformers warns that a text "will result in indexing errors" when it tokenizes more than
    the model reads; ours are cut before the model sees them, so the warning would only mislead."""
    import logging

    monkeypatch.setattr(logging.getLogger("transformers"), "propagate", True)  # (to caplog)
    reranker = load_reranker(str(models[model]), family=family, max_length=512)  # all the tokenizer allows
    with caplog.at_level(logging.WARNING):
        scores = reranker.score(QUERY, ["scurvy vitamin " * 2000])
    assert len(scores) == 1 and math.isfinite(scores[0])
    assert "indexing errors" not in caplog.text


def test_bi_encoder_scores_are_cosines_of_mean_pooled_embeddings(models):
    from transformers import AutoModel, AutoTokenizer

    folder = models["bi"]
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()

    def embed(text):
        inputs = tokenizer(text, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**inputs).last_hidden_state[0]
        vector = hidden.mean(dim=0)
        return (vector / vector.norm()).numpy()

    expected = [float(embed(QUERY) @ embed(d)) for d in DOCS]
    reranker = load_reranker(str(folder), family="bi-encoder")
    assert np.abs(np.array(reranker.score(QUERY, DOCS)) - expected).max() <= 1e-5


def test_bi_encoder_embeds_each_document_once_per_chunk_and_keeps_nothing_across_chunks(models):
    """A chunk's scores depend on that chunk alone: scoring it after another chunk gives exactly what
    scoring it first does (a resumed run skips the earlier chunk)."""
    reranker = load_reranker(str(models["bi"]), family="bi-encoder")
    reranker.score_batch(requests([QUERY, "aspirin"]))  # two queries, the same documents
    assert reranker.runtime_stats()["embedded_documents"] == len(DOCS)
    after_another = reranker.score_batch(requests(["vitamin d", "heart"]))
    assert reranker.runtime_stats()["embedded_documents"] == 2 * len(DOCS)  # embedded again
    alone = load_reranker(str(models["bi"]), family="bi-encoder").score_batch(
        requests(["vitamin d", "heart"])
    )
    assert all(np.array_equal(a, b) for a, b in zip(after_another, alone))


@pytest.mark.parametrize(
    ("model", "family"), [("ce1", "cross-encoder"), ("lm", "yes-no"), ("bi", "bi-encoder")]
)
def test_execution_counts_are_per_dataset(models, model, family):
    from rerank_eval.config.reader import load_config

    reranker = load_reranker(str(models[model]), family=family, max_batch_tokens=64)
    reranker.score_batch(requests([QUERY, "aspirin"]))
    first = reranker.runtime_stats()["forward_passes"]
    spec = load_config().suite("beir").datasets[0]
    reranker.begin_dataset(DatasetContext(spec.key, spec.instructions))
    assert reranker.runtime_stats()["forward_passes"] == 0
    reranker.score_batch(requests([QUERY, "aspirin"]))
    assert reranker.runtime_stats()["forward_passes"] == first > 1


def test_bi_encoder_batching_invariant(models):
    queries = [QUERY, "vitamin d bones", "aspirin"]
    batched = load_reranker(str(models["bi"]), family="bi-encoder", max_batch_tokens=100_000)
    single = load_reranker(str(models["bi"]), family="bi-encoder", max_batch_tokens=1)
    for a, b in zip(batched.score_batch(requests(queries)), single.score_batch(requests(queries))):
        assert np.abs(a - b).max() <= 1e-5


# -- presets, remote code, instructions, several models in one command ------------------------------------


REMOTE_MODELING = """
from transformers import BertForSequenceClassification


class EagerOnlyRanker(BertForSequenceClassification):
    _supports_sdpa = False
    _supports_flash_attn = False

    @classmethod
    def from_pretrained(cls, *args, **kwargs):  # returns the model alone, as some repositories' code does
        kwargs.pop("output_loading_info", None)
        return super().from_pretrained(*args, **kwargs)
"""


def test_code_shipped_by_a_checkpoint_runs_with_its_own_attention_choice(models, tmp_path):
    import shutil

    remote = tmp_path / "remote"
    shutil.copytree(models["ce1"], remote)
    (remote / "modeling_eager.py").write_text(REMOTE_MODELING)
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_eager.EagerOnlyRanker"}
    (remote / "config.json").write_text(json.dumps(config))
    own = load_reranker(str(remote), family="cross-encoder", trust_remote_code=True)
    assert type(own.model).__name__ == "EagerOnlyRanker" and own.describe()["attention"] == "eager"
    plain = load_reranker(str(models["ce1"]), family="cross-encoder")
    assert np.allclose(own.score(QUERY, DOCS), plain.score(QUERY, DOCS), atol=1e-5)
    # the flag alone changes nothing for a checkpoint without code of its own
    flagged = load_reranker(str(models["ce1"]), family="cross-encoder", trust_remote_code=True)
    assert flagged.describe()["attention"] == plain.describe()["attention"] == "sdpa"


def test_remote_code_preset_needs_the_flag(tmp_path):
    with pytest.raises(UserError, match="pass trust_remote_code=True to allow it"):
        load_reranker("jina-reranker-v2")
    (tmp_path / "docs.txt").write_text("a document\n")
    result = CliRunner().invoke(
        app, ["score", "--model", "jina-reranker-v2", "--query", "q", "--docs", str(tmp_path / "docs.txt")]
    )
    assert result.exit_code == 2 and "pass --trust-remote-code to allow it" in result.output


def test_unknown_setting_is_refused(models):
    with pytest.raises(UserError, match="unknown setting 'block_size' for family cross-encoder"):
        load_reranker(str(models["ce1"]), block_size=3)


@pytest.mark.parametrize(
    ("model", "family"),
    [("ce1", "cross-encoder"), ("lm", "yes-no"), ("lm", "one-zero"), ("bi", "bi-encoder"),
     ("listwise", "listwise-last-token")],
)  # fmt: skip
def test_no_documents_give_no_scores(models, model, family):
    assert load_reranker(str(models[model]), family=family).score("a query", []) == []


def test_scorer_version_is_part_of_the_score_identity(models):
    identity = load_reranker(str(models["ce1"]), family="cross-encoder").score_identity()
    assert identity["scorer_version"] == "cross-encoder/1"


def test_settings_are_checked_before_loading(models):
    with pytest.raises(UserError, match="setting block_size of family listwise-last-token must be a"):
        load_reranker(str(models["listwise"]), block_size=0)
    with pytest.raises(UserError, match=r"setting max_length of family bi-encoder .* got 1\.5"):
        load_reranker(str(models["bi"]), family="bi-encoder", max_length=1.5)
    # a listwise instruction holding a special string would add a marker no candidate has
    for special in ("<|embed_token|>", "<|rerank_token|>"):
        with pytest.raises(
            UserError, match=re.escape(f"instruction of family listwise-last-token holds {special}")
        ):
            load_reranker(str(models["listwise"]), instruction=f"rank {special} well")
    assert load_reranker(str(models["listwise"]), instruction="rank well").settings.instruction == "rank well"


@pytest.mark.parametrize(
    ("device", "message"),
    [("tpu", "unknown device 'tpu'"), ("cuda:7", "device 'cuda:7': "),
     ("meta", "unsupported device 'meta'")],
)  # fmt: skip
def test_unusable_devices_are_one_clear_error(models, device, message):
    with pytest.raises(UserError, match=message):
        load_reranker(str(models["ce1"]), family="cross-encoder", device=device)


def test_models_command_lists_presets():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    for name in ("jina-reranker-v3", "bge-reranker-v2-m3", "qwen3-reranker-4b", "mxbai-rerank-large-v2",
                 "minilm-bi", "ms-marco-minilm", "jina-reranker-v2", "bm25"):  # fmt: skip
        assert name in result.output
    assert "--trust-remote-code" in result.output


def test_per_dataset_instruction_reaches_the_yes_no_template(models, tmp_path):
    text = Path("rerank_eval/config/benchmarks.yaml").read_text(encoding="utf-8")
    marker = "      - key: fiqa\n        id: beir/fiqa/test\n"
    config = tmp_path / "c.yaml"
    config.write_text(
        text.replace(marker, marker + "        instructions: {yes-no: Find financial advice}\n")
    )
    runs = tmp_path / "runs"
    builders.write_run(runs / "fiqa.trec", builders.FIQA_RUN)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "beir", "--config", str(config), "--datasets", "fiqa", "--model", str(models["lm"]),
        "--family", "yes-no", "--runs-dir", str(runs), "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((out / "manifest.json").read_text())["datasets"][0]
    assert record["model_settings"]["instruction"] == "Find financial advice"


def test_several_models_one_command_one_table(models, tmp_path):
    runs = tmp_path / "runs"
    builders.write_run(runs / "scifact.trec", builders.SCIFACT_RUN)
    builders.write_run(runs / "fiqa.trec", builders.FIQA_RUN)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "beir", "--datasets", "scifact,fiqa", "--runs-dir", str(runs), "--out", str(out),
        "--model", "bm25", "--model", str(models["ce1"]), "--model", str(models["listwise"]),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["bm25", "ce1", "listwise"]
    assert "nDCG@10 on beir (top-100), 3 models" in result.output
    _models_table_holds_each_models_summary(out, ["bm25", "ce1", "listwise"])
    for name in ("bm25", "ce1", "listwise"):
        manifest = json.loads((out / name / "manifest.json").read_text())
        assert [d["key"] for d in manifest["datasets"]] == ["fiqa", "scifact"]
    bm25 = json.loads((out / "bm25" / "manifest.json").read_text())
    assert bm25["model"]["family"] == "first-stage-order"


def _models_table_holds_each_models_summary(out, names: list[str]) -> None:
    """The several-models table: per row the first stage's nDCG@10 and R@100 once, then each
    model's nDCG@10 with its Δ and its Judged@10, as each model's own summary.csv has them."""
    import pandas as pd

    from rerank_eval.reporting.report import Report, models_table
    from rerank_eval.results.folder import load_result

    saved = [load_result(out / name) for name in names]
    table = models_table([Report(s.manifest, s.per_query) for s in saved])
    summaries = [pd.read_csv(out / name / "summary.csv") for name in names]
    for cells in table.rows:

        def figure(summary, measure, stage, row=cells[0].value):
            line = summary[(summary.dataset == row) & (summary.measure == measure)].iloc[0]
            return f"{line[stage]:.4f}"

        assert cells[1].value == figure(summaries[0], "nDCG@10", "first_stage")
        assert cells[2].value == figure(summaries[0], "R@100", "first_stage")
        for index, summary in enumerate(summaries):
            value, judged = cells[3 + 2 * index], cells[4 + 2 * index]
            assert value.value == figure(summary, "nDCG@10", "reranked")
            assert value.note == f" ({float(figure(summary, 'nDCG@10', 'delta')):+.4f})"
            assert judged.value == figure(summary, "Judged@10", "reranked")


def test_models_on_an_80_column_terminal_shows_every_preset_name_whole(monkeypatch):
    from rich.console import Console

    from rerank_eval.cli import catalog
    from rerank_eval.config.reader import load_config

    monkeypatch.setattr(catalog, "console", Console(width=80))
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 80
    for preset in load_config().models.values():
        assert any(line.startswith(f"│ {preset.name} ") for line in lines), preset.name
    assert "jina-reranker-v2: needs --trust-remote-code" in result.output


def test_a_mistyped_setting_is_named_with_the_closest(models):
    expected = (
        r"unknown setting 'max_len' for family cross-encoder \(did you mean 'max_length'\?\) \(accepted: "
    )
    with pytest.raises(UserError, match=expected):
        load_reranker(str(models["ce1"]), max_len=3)


@pytest.mark.parametrize(("family", "calls"), [("listwise-last-token", [300]), ("cross-encoder", [256, 44])])
def test_score_runs_a_family_that_scores_a_query_whole_in_one_call(family, calls):
    """A listwise block's query vector enters every score: its documents are never scored in slices."""
    from types import SimpleNamespace

    from rerank_eval.cli.tools import _scores_with_progress

    seen = []

    def score(query, texts):
        seen.append(len(texts))
        return [0.0] * len(texts)

    reranker = SimpleNamespace(family=family, score=score)
    assert len(_scores_with_progress(reranker, "q", [f"d{i}" for i in range(300)])) == 300
    assert seen == calls
