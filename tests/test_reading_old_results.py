"""Result folders and score journals written before the package's layout changed still serve.

`tests/data/written-before-the-layout/` holds three result folders and what `export` and
`compare` write from them (byte for byte; three of those were regenerated when the outputs changed
by design, as its README says), and the score journals of one of those runs: the same command must
find them under the same cache keys and reuse every score.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app
from tests import builders

OLD = Path(__file__).parent / "data" / "written-before-the-layout"


def run(*args) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def same_bytes(written: Path, expected: str) -> None:
    assert written.read_bytes() == (OLD / "expected" / expected).read_bytes(), expected


def test_export_of_an_old_folder_writes_the_same_summary(tmp_path):
    run("export", OLD / "ce", "--csv", tmp_path / "summary.csv")
    same_bytes(tmp_path / "summary.csv", "summary.csv")


@pytest.mark.parametrize(
    ("option", "expected"),
    [("--markdown", "t.md"), ("--latex", "t.tex"), ("--json", "t.json"), ("--csv", "long.csv"),
     ("--csv-wide", "wide.csv")],
)  # fmt: skip
def test_compare_of_old_folders_writes_the_same_tables(tmp_path, option, expected):
    written = tmp_path / expected
    run("compare", OLD / "bm25", OLD / "ce", OLD / "ce2", "--published", "jina-reranker-v3", "--force",
        option, written)  # fmt: skip
    # the JSON names each result's path, which is where this checkout is
    written.write_text(written.read_text(encoding="utf-8").replace(str(OLD), "OLD"), encoding="utf-8")
    same_bytes(written, expected)


def test_journals_of_an_old_run_are_found_under_the_same_keys(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (cache / "journals").mkdir(parents=True)
    for journal in (OLD / "journals").iterdir():
        (cache / "journals" / journal.name).write_bytes(journal.read_bytes())
    runs = {key: builders.write_run(tmp_path / f"{key}.trec", run)
            for key, run in (("scifact", builders.SCIFACT_RUN), ("fiqa", builders.FIQA_RUN))}  # fmt: skip
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(cache))
    out = tmp_path / "again"
    run("beir", "--datasets", "scifact,fiqa", "--model", "bm25", "--top-k", "5", "--out", out,
        "--run", f"scifact={runs['scifact']}", "--run", f"fiqa={runs['fiqa']}")  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert {d["key"]: d["timings"]["resumed_queries"] for d in manifest["datasets"]} == {
        "scifact": 2,
        "fiqa": 2,
    }
    for name in ("runs/scifact.trec", "runs/fiqa.trec", "per_query.csv", "summary.csv"):
        assert (out / name).read_bytes() == (OLD / "bm25" / name).read_bytes(), name
