"""Invariants the mutation run (`make mutate`) found unpinned, each now pinned by behaviour.

Cache keys and the fairness guard that must not depend on the order entries were written in;
statistics at their edges (equal differences, p-values above one before capping, identical runs);
the listwise merge where block weights matter and where they all vanish; the block rule's capacity
reset; negative shuffle seeds; score journal lines that must be refused; and what a result folder
records about itself.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from rerank_eval.cache import cache_key
from rerank_eval.errors import UserError
from rerank_eval.pipeline.journal import ScoreJournal
from rerank_eval.pipeline.plan import CandidateOrder
from rerank_eval.reporting.compare.comparison import Comparison
from rerank_eval.reporting.compare.stats import (
    RESAMPLES,
    SEED,
    TESTS,
    bootstrap_interval,
    holm,
    paired_p_value,
)
from rerank_eval.rerankers.listwise.procedure import merge_blocks, plan_blocks
from rerank_eval.results.folder import ResultWriter, load_result
from tests import builders
from tests.test_comparison import make_result
from tests.test_invariants import edited, first_stage


def test_cache_keys_ignore_the_order_entries_were_written_in_and_key_paths_by_their_text():
    assert cache_key({"a": 1, "b": {"x": 1, "y": [2, 3]}}) == cache_key({"b": {"y": [2, 3], "x": 1}, "a": 1})
    assert cache_key({"model": Path("/models/ce")}) == cache_key({"model": "/models/ce"})
    assert cache_key({"a": 1}) != cache_key({"a": 2})


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_result(tmp_path_factory.mktemp("pinned"), "base", 0.0, noise=0.0)


def test_the_guard_compares_first_stage_settings_whatever_their_key_order(base, tmp_path):
    one = edited(base, tmp_path / "one", lambda m: first_stage(m, settings={"k1": 0.9, "b": 0.4}))
    other = edited(base, tmp_path / "other", lambda m: first_stage(m, settings={"b": 0.4, "k1": 0.9}))
    assert not Comparison([load_result(one), load_result(other)]).warnings


def without_dataset(folder: Path, key: str) -> None:
    """`folder`'s per-query values of `key` removed, as in a run without that dataset."""
    import pandas as pd

    frame = pd.read_csv(folder / "per_query.csv", dtype=str, keep_default_na=False)
    frame[frame.dataset != key].to_csv(folder / "per_query.csv", index=False)
    builders.reseal(folder)


def test_the_guard_checks_every_shared_dataset_after_one_only_the_baseline_has(base, tmp_path):
    def lacks_the_first_and_differs_later(manifest: dict) -> None:
        del manifest["datasets"][0]
        manifest["datasets"][-1]["first_stage"] = {**manifest["datasets"][-1]["first_stage"], "sha256": "x"}

    other = edited(base, tmp_path / "other", lacks_the_first_and_differs_later)
    without_dataset(other, json.loads((base / "manifest.json").read_text())["datasets"][0]["key"])
    last = json.loads((base / "manifest.json").read_text())["datasets"][-1]["key"]
    with pytest.raises(UserError, match=f"first stage of {last} differs"):
        Comparison([load_result(base), load_result(other)])


def test_bootstrap_interval_is_scipys_percentile_bootstrap_with_the_same_seed_and_resamples():
    differences = np.random.default_rng(5).normal(0.01, 0.05, 40)
    expected = stats.bootstrap(
        (differences,), np.mean, confidence_level=0.95, n_resamples=RESAMPLES, method="percentile",
        random_state=SEED,
    ).confidence_interval  # fmt: skip
    assert bootstrap_interval(differences) == (expected.low, expected.high)


def test_no_interval_when_every_difference_is_the_same():
    assert bootstrap_interval(np.full(12, 0.02)) is None
    assert bootstrap_interval(np.zeros(12)) is None
    assert bootstrap_interval(np.array([0.3])) is None


def test_holm_caps_adjusted_p_values_at_one():
    # by hand: 2 × 0.7 = 1.4 → 1; then max(1, 1 × 0.9) = 1
    assert holm([0.7, 0.9]) == [1.0, 1.0]
    assert holm([0.9, 0.7]) == [1.0, 1.0]


@pytest.mark.parametrize("test", list(TESTS))
def test_identical_runs_have_p_value_one_and_a_single_pair_none(test):
    """Identical values: p is 1. A single pair that differs is no sample: scipy's t-test gives NaN
    and its permutation test refuses it, so there is no p-value (shown p=n/a, never a †)."""
    values = np.array([0.2, 0.5, 0.7, 0.1])
    assert paired_p_value(values, values.copy(), test) == 1.0
    assert paired_p_value(np.array([0.9]), np.array([0.9]), test) == 1.0
    assert paired_p_value(np.array([0.9]), np.array([0.1]), test) is None


def spec_merge(docs: list[np.ndarray], queries: list[np.ndarray]) -> np.ndarray:
    """The specification's merge, written out: block weight = max over its documents of
    (1 + cosine) / 2, the final query the weighted mean of block queries (equal weights when every
    weight is zero), every score the cosine with it."""

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    weights = [max((1 + cosine(d, q)) / 2 for d in block) for block, q in zip(docs, queries)]
    if sum(weights) == 0:
        weights = [1.0] * len(weights)
    query = sum(w * q for w, q in zip(weights, queries)) / sum(weights)
    return np.array([cosine(d, query) for block in docs for d in block])


def test_merge_weighs_blocks_by_their_best_document_even_when_every_weight_is_small():
    rng = np.random.default_rng(3)
    queries = [rng.normal(size=8), rng.normal(size=8)]
    # documents pointing away from their block's query: weights well below 1 in sum
    docs = [np.stack([-q + 0.3 * rng.normal(size=8) for _ in range(3)]) for q in queries]
    weights = [
        max((1 + d @ q / np.linalg.norm(d) / np.linalg.norm(q)) / 2 for d in b) for b, q in zip(docs, queries)
    ]
    assert 0 < sum(weights) < 1 and abs(weights[0] - weights[1]) > 1e-3
    np.testing.assert_allclose(merge_blocks(docs, queries), spec_merge(docs, queries), atol=1e-12)


def test_merge_falls_back_to_equal_weights_when_every_block_scores_minus_one():
    queries = [np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])]
    docs = [np.stack([-queries[0], -2 * queries[0]]), np.stack([-queries[1]])]
    merged = merge_blocks(docs, queries)
    assert np.isfinite(merged).all()
    np.testing.assert_allclose(merged, spec_merge(docs, queries), atol=1e-12)


def test_block_capacity_resets_in_full_for_every_block():
    # context 100, query 10: 80 per block, max_doc_length 20. Block 1 closes after 30 + 30 (20
    # left); block 2 starts again from 80: 30 + 25 + 5 leaves 20, so it closes after the fifth.
    assert plan_blocks([30, 30, 30, 25, 5, 5], 10, 100, 20, 125) == [range(0, 2), range(2, 5), range(5, 6)]


def test_a_negative_shuffle_seed_is_a_seed():
    order = CandidateOrder.parse("shuffled:-5")
    assert (order.kind, order.seed, str(order)) == ("shuffled", -5, "shuffled:-5")
    with pytest.raises(UserError):
        CandidateOrder.parse("shuffled:5-")


GOOD = {"q": "1", "docs": ["a", "b"], "scores": [0.5, 0.25]}


@pytest.mark.parametrize(
    "line",
    [
        {**GOOD, "blocks": [0, 2]},
        {**GOOD, "blocks": [-1]},
        {**GOOD, "blocks": ["2"]},
        {**GOOD, "blocks": "2"},
        {**GOOD, "scores": [0.5, float("nan")]},
        {**GOOD, "scores": [0.5, float("inf")]},
        {**GOOD, "scores": ["0.5", "0.25"]},
        {**GOOD, "scores": [[0.5], [0.25]]},
        {**GOOD, "scores": [True, False]},
        {**GOOD, "q": 1},
        {**GOOD, "q": "7"},
        {**GOOD, "docs": ["b", "a"]},
        {**GOOD, "scores": [0.5]},
    ],
    ids=["zero block", "negative block", "text block", "blocks not a list", "NaN score", "infinite score",
         "text scores", "nested scores", "boolean scores", "numeric query id", "unknown query",
         "other documents", "too few scores"],
)  # fmt: skip
def test_a_journal_line_that_is_not_a_valid_record_is_never_reused(line, tmp_path, capsys):
    path = tmp_path / "journal.jsonl"
    path.write_text(json.dumps(line) + "\n" + json.dumps({**GOOD, "q": "2"}) + "\n")
    expected = {"1": ["a", "b"], "2": ["a", "b"]}
    loaded = ScoreJournal(path).load(expected, siblings=False)
    assert set(loaded) == {"2"}
    assert capsys.readouterr().err == (
        f"warning: journal {path} has 1 unreadable or stale lines (first: line 1); "
        "those queries are scored again\n"
    )
    # the journal is rewritten with what it kept, which the next run reads back, quietly
    again = ScoreJournal(path).load(expected, siblings=False)
    assert set(again) == {"2"} and again["2"].scores.tolist() == [0.5, 0.25]
    assert capsys.readouterr().err == ""


def test_a_journal_line_nested_too_deeply_is_dropped_not_a_crash(tmp_path, capsys):
    path = tmp_path / "journal.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n" + json.dumps({**GOOD, "q": "2"}) + "\n")
    loaded = ScoreJournal(path).load({"1": ["a", "b"], "2": ["a", "b"]}, siblings=False)
    assert set(loaded) == {"2"} and "1 unreadable or stale lines (first: line 1)" in capsys.readouterr().err


def test_a_journal_line_with_blocks_of_one_document_is_reused(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text(json.dumps({**GOOD, "blocks": [1, 1]}) + "\n")
    loaded = ScoreJournal(path).load({"1": ["a", "b"]}, siblings=False)
    assert loaded["1"].notes == {"blocks": [1, 1]} and loaded["1"].scores.tolist() == [0.5, 0.25]


def test_a_result_folder_records_each_run_files_hash(tmp_path):
    folder = make_result(tmp_path, "model", 0.0)
    writer = ResultWriter(tmp_path / "with-runs")
    writer.add_run("scifact", ["1 Q0 d1 1 2.0 x\n", "1 Q0 d2 2 1.0 x\n"])
    manifest = json.loads((folder / "manifest.json").read_text())
    published = writer.publish({**manifest, "datasets": manifest["datasets"][:1]}, lambda m, f: "")
    recorded = json.loads((published / "manifest.json").read_text())["run_sha256"]
    text = (published / "runs" / "scifact.trec").read_bytes()
    assert recorded == {"runs/scifact.trec": hashlib.sha256(text).hexdigest()}


def test_an_existing_result_folder_is_never_replaced_and_only_an_identical_one_is_kept(tmp_path):
    manifest = json.loads((make_result(tmp_path, "model", 0.0) / "manifest.json").read_text())

    def publish(keep_identical: bool, value: float) -> ResultWriter:
        writer = ResultWriter(tmp_path / "out", keep_identical)
        writer.add_values("scifact", "reranked", {"nDCG@10": {"q1": value}})
        writer.publish(manifest, lambda m, frame: frame.to_csv())
        return writer

    assert publish(False, 0.5).kept_existing is False
    with pytest.raises(UserError, match="exists already; choose another folder"):
        publish(False, 0.5)
    assert publish(True, 0.5).kept_existing is True
    with pytest.raises(UserError, match="holds other results"):
        publish(True, 0.6)
    assert not (tmp_path / "out.incomplete").exists()


def test_the_manifest_counts_the_queries_the_candidates_cover(tmp_path, monkeypatch):
    """scifact's fixture, counted here from its qrels and run: 3 judged queries, 2 of them in the
    run, one judged query without candidates, one run query without judgements, no self-matches,
    no query whose scores all tie."""
    from tests import builders

    result = invoke(bm25_on_scifact(tmp_path, monkeypatch))
    assert result.exit_code == 0, result.output
    out = tmp_path / "o"
    judged, in_run = set(builders.SCIFACT_QRELS), set(builders.SCIFACT_RUN)
    coverage = json.loads((out / "manifest.json").read_text())["datasets"][0]["coverage"]
    assert coverage == {
        "judged_queries": len(judged),
        "queries_with_candidates": len(judged & in_run),
        "queries_without_run": len(judged - in_run),
        "self_matches_dropped": 0,
        "run_queries_without_judgements": len(in_run - judged),
        "queries_with_equal_scores": 0,
    }


def test_the_same_command_after_its_result_was_published_keeps_it(tmp_path, monkeypatch):
    """A kill after the result folder was published, before the command exited (its table still
    printing): the same command again ends well, with the same folder, not "exists already"."""
    args = bm25_on_scifact(tmp_path, monkeypatch)
    assert invoke(args).exit_code == 0
    out = tmp_path / "o"
    published = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = invoke(args)
    assert again.exit_code == 0, again.output
    assert f"{out}: the same results as the folder already there, which is kept" in again.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == published
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "o", "scifact.trec"]


def test_the_same_command_over_a_changed_config_does_not_keep_the_folder(tmp_path, monkeypatch):
    """The scores come out the same, but the manifest would record another config: the folder
    already there is not passed off as this run's."""
    config = tmp_path / "mine.yaml"
    config.write_text("suites: {}\n", encoding="utf-8")
    args = [*bm25_on_scifact(tmp_path, monkeypatch), "--config", str(config)]
    assert invoke(args).exit_code == 0
    published = (tmp_path / "o" / "manifest.json").read_bytes()
    config.write_text("# a note\nsuites: {}\n", encoding="utf-8")
    again = invoke(args)
    assert again.exit_code == 2
    # refused before any work (a command over an edited config reads as other results at once)
    assert again.output.splitlines() == [
        f"error: result folder {tmp_path / 'o'} exists already and holds this command's result over "
        "config files changed since; choose another --out"
    ]
    assert (tmp_path / "o" / "manifest.json").read_bytes() == published


def test_a_folder_whose_manifest_records_no_config_files_is_not_said_to_be_over_changed_ones(
    tmp_path, monkeypatch
):
    """An older rerank-eval's manifest (or a damaged one) records no config files: that is what is
    said, not that they changed."""
    args = bm25_on_scifact(tmp_path, monkeypatch)
    assert invoke(args).exit_code == 0
    manifest_path = tmp_path / "o" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["suite"]["config_files"]
    manifest_path.write_text(json.dumps(manifest))
    assert invoke(args).output.splitlines() == [
        f"error: result folder {tmp_path / 'o'} exists already and holds this command's result, whose "
        "manifest records no config files; choose another --out"
    ]


def test_a_crafted_command_in_a_folders_manifest_is_said_escaped_and_cut(tmp_path, monkeypatch):
    args = bm25_on_scifact(tmp_path, monkeypatch)
    assert invoke(args).exit_code == 0
    manifest_path = tmp_path / "o" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["command"] = ["rerank-eval", "\x1b[2J\n" * 200, 5]
    manifest_path.write_text(json.dumps(manifest))
    (line,) = invoke([*args, "--top-k", "10"]).output.splitlines()
    assert "\x1b" not in line and "\\x1b[2J\\n" in line and len(line) < 300 + len(str(tmp_path))


def test_an_out_another_command_published_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    """Loading may be a download of gigabytes: the folder in the way is said first."""
    from rerank_eval import rerankers

    args = bm25_on_scifact(tmp_path, monkeypatch)
    assert invoke(args).exit_code == 0
    loaded = []
    monkeypatch.setattr(rerankers, "load_reranker", lambda *a, **k: loaded.append(a) or 1 / 0)
    other = invoke([*args[:4], "minilm-bi", *args[5:]])
    recorded = repr(" ".join(args))  # (the folder's command, escaped, then cut; the program not said)
    assert other.output.splitlines() == [
        f"error: result folder {tmp_path / 'o'} exists already and holds the result of another command "
        f"({recorded[:160] + '...' if len(recorded) > 160 else recorded}); choose another --out"
    ]
    assert loaded == []
    # the same command with --fresh: it scores again, and replaces no result
    fresh = invoke([*args, "--fresh"])
    assert fresh.output.splitlines() == [
        f"error: result folder {tmp_path / 'o'} exists already and holds this command's result (--fresh "
        "scores again; it does not replace a result); choose another --out"
    ]


def test_a_checkpoint_changed_since_its_result_is_refused_before_any_scoring(tmp_path, monkeypatch):
    """The same command over a checkpoint retrained in place: its published folder holds another
    model's results, said once the model loads, not after the whole run (its scores journaled)."""
    from rerank_eval.pipeline import score
    from tests.checkpoints import build_cross_encoder

    checkpoint = build_cross_encoder(tmp_path / "ce", seed=0)
    args = bm25_on_scifact(tmp_path, monkeypatch)
    args[args.index("bm25")] = str(checkpoint)
    assert invoke(args).exit_code == 0
    published = (tmp_path / "o" / "manifest.json").read_bytes()
    before = json.loads(published)["model"]["content_sha256"]
    assert invoke(args).exit_code == 0  # the same checkpoint: its folder kept

    build_cross_encoder(checkpoint, seed=1)  # retrained in place
    scored = []
    monkeypatch.setattr(score, "score_with_backoff", lambda *a, **k: scored.append(a) or 1 / 0)
    again = invoke(args)
    assert again.exit_code == 2, again.output
    said = re.fullmatch(
        rf"error: result folder {re.escape(str(tmp_path / 'o'))} exists already and holds the results of "
        rf"another checkpoint of {re.escape(str(checkpoint))} \(content_sha256 '(\w+)' then, '(\w+)' now\); "
        r"choose another --out",
        again.output.strip().splitlines()[-1],
    )
    assert said and said[1] == before and re.fullmatch("[0-9a-f]{64}", said[2]) and said[2] != before
    assert scored == [] and (tmp_path / "o" / "manifest.json").read_bytes() == published


def test_a_changed_checkpoint_is_said_in_one_line_whatever_its_folder_recorded(tmp_path):
    """The earlier manifest is read as written (unchecked): what it recorded is quoted and cut."""
    from types import SimpleNamespace

    from rerank_eval.pipeline.execute import _refuse_another_checkpoint
    from rerank_eval.results.folder import HoldsOtherResults

    recorded = {"family": "cross-encoder", "source": "x\ny\x1b[2J" + "z" * 10_000}
    (tmp_path / "manifest.json").write_text(json.dumps({"model": recorded}))
    now = {"family": "cross-encoder", "source": "ce"}
    reranker = SimpleNamespace(name="", family="cross-encoder", describe=lambda: now)
    with pytest.raises(HoldsOtherResults) as refused:
        _refuse_another_checkpoint(tmp_path, reranker)
    said = str(refused.value)
    assert "\n" not in said and "\x1b" not in said and len(said) < 300
    assert "another checkpoint of cross-encoder (source 'x\\ny\\x1b[2Jzzz" in said
    assert "then, 'ce' now); choose another folder" in said
    reranker = SimpleNamespace(name="", family="cross-encoder", describe=lambda: recorded)
    _refuse_another_checkpoint(tmp_path, reranker)  # the same checkpoint: no refusal


@pytest.mark.parametrize(
    ("changed", "then", "now"),
    [("revision", "a" * 40, "b" * 40), ("family", "cross-encoder", "yes-no")],  # (source: above)
)
def test_a_hub_checkpoint_is_another_by_its_revision_or_family(tmp_path, changed, then, now):
    """A Hub model has no content hash (its files are not hashed): a new commit upstream is told by
    its revision alone, and the same weights scored as another family are other results."""
    from types import SimpleNamespace

    from rerank_eval.pipeline.execute import _refuse_another_checkpoint
    from rerank_eval.results.folder import HoldsOtherResults

    recorded = {"family": "cross-encoder", "source": "org/m", "revision": "a" * 40, "content_sha256": None}
    (tmp_path / "manifest.json").write_text(json.dumps({"model": recorded}))
    current = {**recorded, changed: now}
    reranker = SimpleNamespace(name="m", family=current["family"], describe=lambda: current)
    with pytest.raises(HoldsOtherResults) as refused:
        _refuse_another_checkpoint(tmp_path, reranker)
    assert f"another checkpoint of m ({changed} {then!r} then, {now!r} now)" in str(refused.value)


def test_what_a_resumed_run_records_otherwise_is_left_out_of_the_comparison():
    from rerank_eval.results.manifest import lasting_record

    def manifest(seconds: float, execution: dict, command: list[str]) -> dict:
        first_stage = {"kind": "dense", "sha256": "ab", "execution": execution}
        record = {"key": "nq", "first_stage": first_stage, "timings": {"rerank_seconds": seconds}}
        return {"command": command, "started": str(seconds), "finished": str(seconds), "seconds": seconds,
                "model": {"name": "m"}, "datasets": [record]}  # fmt: skip

    one = manifest(1.0, {"encoded_passages": 9}, ["/bin/rerank-eval", "beir", "--fresh"])
    assert lasting_record(one) == lasting_record(manifest(2.0, {}, ["rerank-eval", "beir"]))
    assert lasting_record(one) != lasting_record(
        manifest(1.0, {"encoded_passages": 9}, ["rerank-eval", "miracl"])
    )
    changed = manifest(1.0, {"encoded_passages": 9}, ["rerank-eval", "beir"])
    changed["datasets"][0]["first_stage"]["sha256"] = "cd"
    assert lasting_record(one) != lasting_record(changed)


def bm25_on_scifact(tmp_path: Path, monkeypatch) -> list[str]:
    """The cheapest run (the first stage's order on the scifact fixture), cached in `tmp_path`."""
    from tests import builders

    run = builders.write_run(tmp_path / "scifact.trec", builders.SCIFACT_RUN)
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "o"
    return ["beir", "--datasets", "scifact", "--model", "bm25", "--run", f"scifact={run}", "--out", str(out)]


def invoke(args: list[str]):
    """The command line `args`, as `sys.argv` too (the command a result records)."""
    import sys
    from unittest import mock

    from typer.testing import CliRunner

    from rerank_eval.cli import app

    with mock.patch.object(sys, "argv", ["rerank-eval", *args]):
        return CliRunner().invoke(app, args)


def test_a_single_process_run_journals_under_the_key_alone(tmp_path, monkeypatch):
    """`<dataset>-<20 hex digits of the key>.jsonl`; only ranks of a multi-process run add
    `.rank<r>-of-<w>` (tests/test_distributed.py runs those)."""
    import re

    args = bm25_on_scifact(tmp_path, monkeypatch)
    assert invoke(args).exit_code == 0
    names = [p.name for p in (tmp_path / "cache" / "journals").iterdir()]
    assert len(names) == 1 and re.fullmatch(r"scifact-[0-9a-f]{20}\.jsonl", names[0]), names


def test_fresh_discards_the_journals_of_its_setup_written_by_any_number_of_processes(tmp_path, monkeypatch):
    """A --fresh run stopped early is resumed without --fresh: it must then find only what the
    fresh run scored, not an earlier torchrun job's journal of the same setup (its sibling)."""
    args = bm25_on_scifact(tmp_path, monkeypatch)
    assert invoke(args).exit_code == 0
    journals = tmp_path / "cache" / "journals"
    (own,) = journals.iterdir()
    stem = own.name.removesuffix(".jsonl")
    earlier = [journals / f"{stem}.rank{r}-of-2.jsonl" for r in (0, 1)]
    other_key = journals / f"scifact-{'0' * 20}.rank0-of-2.jsonl"
    for path in (*earlier, other_key):
        path.write_text(own.read_text())
    assert invoke([*args[:-1], str(tmp_path / "fresh"), "--fresh"]).exit_code == 0
    assert sorted(journals.iterdir()) == sorted([own, other_key])


def test_aborting_twice_is_harmless(tmp_path):
    """A run that fails after its writer already cleaned up (an existing folder holding other
    results) aborts again on its way out: the second abort must not hide the first error."""
    writer = ResultWriter(tmp_path / "out")
    writer.abort()
    writer.abort()
    assert not (tmp_path / "out.incomplete").exists()


def test_a_dataset_one_run_lacks_is_compared_where_it_can_be(base, tmp_path):
    """A run without a dataset the baseline has: the comparison says so in a note instead of
    failing on the missing values. (A run whose manifest lists a dataset its values lack is an
    edited folder, refused as it is read: tests/test_hostile_input.py.)"""
    other = edited(
        base,
        tmp_path / "other",
        lambda m: m.update(datasets=[d for d in m["datasets"] if d["key"] != "fiqa"]),
    )
    without_dataset(other, "fiqa")
    comparison = Comparison([load_result(base), load_result(other)])
    assert "fiqa: not in other" in comparison.footnotes


def test_the_command_line_names_its_flag_where_the_library_says_folder(tmp_path, monkeypatch):
    args = bm25_on_scifact(tmp_path, monkeypatch)
    assert invoke(args).exit_code == 0
    again = invoke([*args, "--top-k", "10"])  # another command (the same one keeps what it published)
    assert again.exit_code == 2
    assert again.output.startswith(f"error: result folder {tmp_path / 'o'} exists already and holds ")
    assert again.output.strip().endswith("; choose another --out")
