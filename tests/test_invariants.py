"""Invariants that keep results honest, each pinned by behaviour: what the fairness guard refuses,
the statistics against scipy with the same method, resamples and seed, atomic writes under an
injected failure, and the listwise block rule at its boundary in the middle of a list."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from rerank_eval.errors import UserError
from rerank_eval.reporting.compare.comparison import Comparison
from rerank_eval.reporting.compare.stats import RESAMPLES, SEED
from rerank_eval.reporting.compare.table import caption
from rerank_eval.results.folder import load_result
from rerank_eval.results.outputs import write_output
from tests import builders
from tests.test_comparison import make_result


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_result(tmp_path_factory.mktemp("base"), "base", 0.0, noise=0.0)


def edited(base: Path, folder: Path, change) -> Path:
    """A copy of `base` (another model, 0.01 better nowhere) whose manifest differs by `change`."""
    shutil.copytree(base, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["model"]["name"] = folder.name
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def first_stage(manifest: dict, **values) -> None:
    for record in manifest["datasets"]:
        record["first_stage"] = {**record["first_stage"], **values}


PROTOCOL_FIELDS = {
    "top-k": (lambda m: m["protocol"].update(top_k=50), r"top-k differs \(base: 100, other: 50\)"),
    "candidate order": (
        lambda m: m["protocol"].update(candidate_order="reversed"),
        "candidate order differs",
    ),
    "first-stage kind": (lambda m: first_stage(m, kind="bm25s"), "first stage of scifact differs"),
    "first-stage hash": (lambda m: first_stage(m, sha256="def"), "first stage of scifact differs"),
    "first-stage settings": (
        lambda m: first_stage(m, settings={"k1": 1.2, "b": 0.75}),
        "first stage of scifact",
    ),
    "self-match policy": (
        lambda m: m["datasets"][0].update(drop_self_matches=True),
        f"self-match policy of {'{key}'} differs",
    ),
    "dataset version": (
        lambda m: m["datasets"][0].update(ir_datasets_id="beir/other/test"),
        "dataset version of {key} differs",
    ),
}


@pytest.mark.parametrize("field", PROTOCOL_FIELDS)
def test_the_guard_refuses_each_protocol_difference_and_force_compares_anyway(base, tmp_path, field):
    change, message = PROTOCOL_FIELDS[field]
    key = json.loads((base / "manifest.json").read_text())["datasets"][0]["key"]
    other = edited(base, tmp_path / "other", change)
    message = message.replace("{key}", key)
    with pytest.raises(UserError, match=f"not a fair comparison: .*{message}"):
        Comparison([load_result(base), load_result(other)])
    forced = Comparison([load_result(base), load_result(other)], force=True)
    assert "WARNING: compared anyway (--force)" in "\n".join(caption(forced))


def test_the_guard_refuses_another_dense_encoder(base, tmp_path):
    def dense(encoder: str):
        return lambda m: first_stage(m, kind="dense", settings={"encoder": encoder, "max_length": 8192})

    one = edited(base, tmp_path / "one", dense("jinaai/jina-embeddings-v3"))
    other = edited(base, tmp_path / "other", dense("BAAI/bge-m3"))
    same = edited(one, tmp_path / "same", dense("jinaai/jina-embeddings-v3"))
    assert "WARNING" not in "\n".join(caption(Comparison([load_result(one), load_result(same)])))
    with pytest.raises(UserError, match="first stage of scifact differs"):
        Comparison([load_result(one), load_result(other)])


def test_where_both_results_record_their_candidates_the_candidates_decide(base, tmp_path):
    """The candidates' hash, not the first stage's kind, file or settings: a run file reused with
    --run (kind run-file, another file hash) compares with its source; other candidates do not."""

    def candidates(digest: str, **stage):
        def change(manifest: dict) -> None:
            for record in manifest["datasets"]:
                record["candidates_sha256"] = digest
            first_stage(manifest, **stage)

        return change

    source = edited(base, tmp_path / "source", candidates("a" * 64))
    reused = edited(base, tmp_path / "reused", candidates("a" * 64, kind="run-file", sha256="def"))
    other = edited(base, tmp_path / "other", candidates("b" * 64))
    assert "WARNING" not in "\n".join(caption(Comparison([load_result(source), load_result(reused)])))
    with pytest.raises(UserError, match="candidates of scifact differ between source and other"):
        Comparison([load_result(source), load_result(other)])
    # beside a result that does not record them, the first stage's identity decides, as before
    with pytest.raises(UserError, match="first stage of scifact differs between source and base"):
        Comparison(
            [
                load_result(source),
                load_result(edited(base, tmp_path / "base", lambda m: first_stage(m, sha256="zzz"))),
            ]
        )


def test_the_guard_refuses_another_judged_query_set(base, tmp_path):
    """A run on other judgements of fiqa (one query fewer judged, as its manifest records)."""

    def one_judged_query_fewer(manifest: dict) -> None:
        fiqa = next(record for record in manifest["datasets"] if record["key"] == "fiqa")
        fiqa["coverage"]["judged_queries"] -= 1

    other = edited(base, tmp_path / "other", one_judged_query_fewer)
    per_query = (other / "per_query.csv").read_text().splitlines()
    kept = [
        per_query[0],
        *(line for line in per_query[1:] if not line.startswith("fiqa,") or ",f1," not in line),
    ]
    (other / "per_query.csv").write_text("\n".join(kept) + "\n")
    builders.reseal(other)
    with pytest.raises(UserError, match=r"query sets of fiqa differ .* \(1 query in only one of them\)"):
        Comparison([load_result(base), load_result(other)])


def test_an_identical_protocol_passes_the_guard(base, tmp_path):
    same = edited(base, tmp_path / "same", lambda m: None)
    assert "WARNING" not in "\n".join(caption(Comparison([load_result(base), load_result(same)])))


def test_average_intervals_are_scipy_percentile_bootstraps_and_w_t_l_counted_by_hand(tmp_path):
    first = make_result(tmp_path, "first", 0.0, noise=0.0)
    second = make_result(tmp_path, "second", 0.03, seed=5)
    result = Comparison([load_result(first), load_result(second)])
    rows = {row.name: row for row in result.rows}
    for average in (row for row in result.rows if row.kind == "average"):
        differences = np.array(
            [rows[n].cells["second"].value - rows[n].cells["first"].value for n in average.members]
        )
        expected = stats.bootstrap(
            (differences,), np.mean, confidence_level=0.95, n_resamples=RESAMPLES, method="percentile",
            random_state=SEED,
        ).confidence_interval  # fmt: skip
        cell = average.cells["second"]
        assert cell.interval == (expected.low, expected.high)
        wins = sum(1 for d in differences if d > 0)
        ties = sum(1 for d in differences if d == 0)
        assert (cell.wins, cell.ties, cell.losses) == (wins, ties, len(differences) - wins - ties)


def test_an_output_write_failing_at_fsync_keeps_the_previous_file_and_leaves_no_temporary(
    tmp_path, monkeypatch
):
    target = tmp_path / "table.csv"
    target.write_text("previous\n")

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    def write(path: Path) -> None:
        with open(path, "w") as handle:
            handle.write("new, partial")
            handle.flush()
            os.fsync(handle.fileno())

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match="No space left on device"):
        write_output(target, write)
    assert target.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_write_atomic_failing_at_fsync_keeps_the_previous_file(tmp_path, monkeypatch):
    from rerank_eval.results.folder import write_atomic

    target = tmp_path / "summary.csv"
    target.write_text("previous\n")
    monkeypatch.setattr(os, "fsync", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError):
        write_atomic(target, "new\n")
    assert target.read_text() == "previous\n"


def test_block_capacity_reaching_max_doc_length_mid_list_closes_the_block():
    from rerank_eval.rerankers.listwise.procedure import plan_blocks

    # context 100, query 10: capacity starts at 80; max_doc_length 20
    # 30 + 30 leaves exactly 20 after the second document: the block closes there, mid-list
    assert plan_blocks([30, 30, 5, 5], 10, 100, 20, 125) == [range(0, 2), range(2, 4)]
    # one token less leaves 21 > 20: the block goes on to the third document (16 left)
    assert plan_blocks([30, 29, 5, 5], 10, 100, 20, 125) == [range(0, 3), range(3, 4)]


ARGUANA_DENSE = """
defaults: {{top_k: {top_k}, model: bm25}}
first_stages:
  bm25s: {{kind: bm25s}}
  tiny: {{kind: dense, encoder: {encoder}, pooling: mean, normalize: true, shard_size: 50}}
suites:
  one:
    datasets:
      - {{key: arguana, id: beir/arguana, first_stage: {first_stage}, drop_self_matches: true}}
models:
  bm25: {{family: first-stage-order}}
"""


@pytest.mark.parametrize(
    ("kind", "top_k", "expected"),
    [("bm25s", 2, {"a1": 2, "a4": 2}), ("tiny", 4, {"a1": 4, "a4": 4})],
    ids=["bm25s", "dense"],
)
def test_every_retrieving_first_stage_fetches_one_more_where_self_matches_are_dropped(
    kind, top_k, expected, tmp_path, monkeypatch
):
    """ArguAna's queries are documents of its corpus (5 here): the top k after dropping each query's
    own document needs the top k + 1. BM25 finds 3 documents sharing a term with each query (itself
    included); the dense encoder ranks all 5."""
    from typer.testing import CliRunner

    from rerank_eval.cli import app
    from tests.checkpoints import build_bi_encoder

    encoder = build_bi_encoder(tmp_path / "encoder")
    config = tmp_path / "arguana.yaml"
    config.write_text(ARGUANA_DENSE.format(encoder=json.dumps(str(encoder)), first_stage=kind, top_k=top_k))
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["run", "one", "--config", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    candidates: dict[str, list[str]] = {}
    for line in (tmp_path / "out" / "runs" / "arguana.first-stage.trec").read_text().splitlines():
        query, _, doc, *_ = line.split()
        candidates.setdefault(query, []).append(doc)
    assert {query: len(docs) for query, docs in candidates.items()} == expected
    assert all(query not in docs for query, docs in candidates.items())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["datasets"][0]["coverage"]["self_matches_dropped"] == 2


def test_judged_queries_left_without_candidates_are_counted_however_that_came_about():
    """A query missing from the run, one the search found nothing for (an empty entry, as Lucene
    and bm25s give) and one whose only result was itself (dropped as a self-match) all score 0, so
    all three are counted as judged queries without candidates."""
    from rerank_eval.first_stage.candidates import select_candidates

    qrels = {q: {"d1": 1} for q in ("has", "absent", "no-hits", "only-itself")}
    queries = dict.fromkeys(qrels, "text")
    run = {"has": {"d1": 2.0, "d2": 1.0}, "no-hits": {}, "only-itself": {"only-itself": 3.0}}
    candidates = select_candidates(run, qrels, queries, 10, True, "x")
    assert sorted(candidates.queries_without_run) == ["absent", "no-hits", "only-itself"]
    assert candidates.coverage()["queries_without_run"] == 3
    assert candidates.coverage()["queries_with_candidates"] == 1
