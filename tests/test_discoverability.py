"""Finding what can be run and being told, in one line, what was mistyped: `suites`, `datasets`,
`first-stages`, close-match suggestions for measures, and Click's own usage errors in the `error:` form."""

from __future__ import annotations

import pytest
from rich.console import Console
from typer.testing import CliRunner

from rerank_eval.cli import app, catalog
from rerank_eval.config.reader import load_config


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], prog_name="rerank-eval")


@pytest.fixture
def narrow(monkeypatch):
    monkeypatch.setattr(catalog, "console", Console(width=80))


def table_rows(output: str) -> list[list[str]]:
    """The cells of a rich table's body rows, a folded cell's lines joined and every space
    dropped (a cell wraps at spaces or folds mid-word)."""
    rows: list[list[str]] = []
    for line in output.splitlines():
        if not line.startswith("│"):
            continue
        cells = ["".join(cell.split()) for cell in line.strip("│").split("│")]
        if cells[0] or not rows:
            rows.append(cells)
        else:  # a continuation line of the row above
            rows[-1] = [above + below for above, below in zip(rows[-1], cells, strict=True)]
    return rows


def test_suites_lists_every_suite_whole_at_80_columns(narrow, tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text(
        "suites:\n  a-rather-long-suite-name-of-mine:\n    datasets:\n      - {key: s, id: beir/x}\n"
    )
    result = run("suites", "--config", user)
    assert result.exit_code == 0, result.output
    assert max(map(len, result.output.splitlines())) <= 80
    rows = {row[0]: row for row in table_rows(result.output)}
    assert set(rows) == {"beir", "miracl", "vaswani", "a-rather-long-suite-name-of-mine"}
    assert rows["beir"][1:] == ["15rows", "BEIR-13(13rows)", "bm25-flat"]
    assert rows["vaswani"][1:] == ["1row", "Vaswani(1row)", "lucene"]  # one row, not "1 rows"
    assert rows["a-rather-long-suite-name-of-mine"][3] == "(commandline)"


def test_datasets_lists_keys_sources_first_stages_and_the_average(narrow, tmp_path):
    result = run("datasets", "beir")
    assert result.exit_code == 0, result.output
    assert max(map(len, result.output.splitlines())) <= 80
    rows = {row[0]: row[1:] for row in table_rows(result.output)}
    assert list(rows) == [d.key for d in load_config().suite("beir").datasets]
    assert rows["webis-touche2020"] == ["beir/webis-touche2020/v2", "bm25-flat", "yes"]
    assert rows["cqadupstack-tex"] == ["beir/cqadupstack/tex", "bm25-flat", "no,rowcqadupstack"]
    assert rows["msmarco"][2] == "no"
    user = tmp_path / "mine.yaml"
    user.write_text("suites:\n  mine:\n    datasets:\n      - {key: local, path: data/mine}\n")
    rows = table_rows(run("datasets", "mine", "--config", user).output)
    assert rows[0][0] == "local" and rows[0][2:] == ["-", "yes"]
    assert rows[0][1] == str(tmp_path / "data" / "mine")  # folded, never cut


def test_first_stages_lists_every_entry_and_what_cannot_run_here(narrow, tmp_path, monkeypatch):
    from rerank_eval.first_stage import kind as first_stage_kind

    user = tmp_path / "mine.yaml"
    entry = "{kind: dense, encoder: ./enc, reference: pyserini-bm25}"
    user.write_text(f"first_stages:\n  my-own-encoder:\n    {entry}\n")
    monkeypatch.setattr(type(first_stage_kind("lucene")), "available", lambda self: True)
    result = run("first-stages", "--config", user)
    assert result.exit_code == 0, result.output
    assert max(map(len, result.output.splitlines())) <= 80
    rows = {row[0]: row[1:] for row in table_rows(result.output)}
    assert list(rows) == [*load_config().first_stages, "my-own-encoder"]
    assert rows["lucene"][0] == "lucene" and rows["lucene"][2] == "pyserini-bm25-flat,pyserini-bm25"
    assert rows["jina-embeddings-v3"][::2] == ["dense", "jina-embeddings-v3"]
    assert rows["my-own-encoder"] == ["dense", "my-own-encoder", "pyserini-bm25"]  # label: the name
    assert "cannot run here" not in result.output
    assert "dense:ENCODER" in result.output
    monkeypatch.setattr(type(first_stage_kind("lucene")), "available", lambda self: False)
    without = " ".join(run("first-stages").output.split())  # lines wrapped at 80 columns, joined
    needs = "cannot run here, it needs Pyserini and a Java runtime (pip install 'rerank-eval[lucene]')"
    assert f"lucene: {needs}; bm25s stands in for it" in without
    assert f"lucene-multifield: {needs} or" in without


@pytest.mark.parametrize(
    ("metric", "meant"),
    [("nDGC@10", "nDCG@10"), ("ndcg@10", "nDCG@10"), ("Recal@100", "Recall@100"), ("mrr@10", "MRR@10")],
)
def test_a_mistyped_measure_gets_the_measure_meant(metric, meant):
    result = run("beir", "--datasets", "scifact", "--model", "bm25", "--metric", metric)
    assert result.exit_code == 2
    assert result.output == f"error: unknown measure {metric!r} (did you mean {meant!r}?)\n"


def test_a_mistyped_measure_with_a_wrong_cutoff_is_not_offered_another_wrong_one():
    """`ndcg@10x` once got "did you mean 'nDCG@10x'?", which is no measure either."""
    result = run("beir", "--datasets", "scifact", "--model", "bm25", "--metric", "ndcg@10x")
    assert result.exit_code == 2
    assert result.output == (
        "error: unknown measure 'ndcg@10x' (did you mean 'nDCG'? check its cutoff or parameters, "
        "e.g. nDCG@10)\n"
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["beir", "--topk", "5"], "error: No such option: --topk (Possible options: --dtype, --top-k); "
                                  "see rerank-eval beir --help"),
        (["compare"], "error: Missing argument 'RESULT'; see rerank-eval compare --help"),
        (["nosuch"], "error: No such command 'nosuch'; see rerank-eval --help"),
        (["models", "extra"],
         "error: Got unexpected extra argument(s) (extra); see rerank-eval models --help"),
    ],
    ids=["unknown option", "missing argument", "unknown command", "extra argument"],
)  # fmt: skip
def test_a_usage_error_is_one_error_line(args, line):
    result = run(*args)
    assert result.exit_code == 2
    assert result.output == line + "\n"


def test_help_and_no_arguments_keep_their_exit_codes():
    assert run("beir", "--help").exit_code == 0
    bare = run()
    assert bare.exit_code == 2 and "Usage: rerank-eval" in bare.output


def test_each_command_of_the_list_is_one_summary_line():
    """The command list shows each docstring's first paragraph with its line breaks kept (rich
    markup), so a summary wrapped in the source came out broken mid-sentence."""
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        summary = (command.help or "").strip().split("\n\n")[0]
        assert "\n" not in summary, name
    listing = CliRunner().invoke(app, ["--help"], prog_name="rerank-eval", env={"COLUMNS": "200"}).output
    panel = listing[listing.index("─ Commands ─") :].splitlines()[1:]
    described = [line for line in panel if line.startswith("│ ")]
    names = [line.split()[1] for line in described if line[2] != " "]
    assert sorted(names) == sorted(group.commands) and len(described) == len(names)


def test_a_narrow_tables_title_keeps_its_path_on_one_line(tmp_path):
    """A suite of one dataset makes a narrow table; its title (the benchmarks files) was wrapped
    in the middle of the path."""
    user = tmp_path / "a-folder-with-a-long-name-for-its-benchmarks" / "mine.yaml"
    user.parent.mkdir()
    user.write_text("suites:\n  mine:\n    datasets:\n      - {key: v, id: vaswani}\n", encoding="utf-8")
    result = run("datasets", "mine", "--config", user)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].strip().endswith(f" + {user})")
