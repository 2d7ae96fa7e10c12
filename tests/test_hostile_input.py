"""Hostile and damaged input: one line, the documented exit code, nothing written outside the result
folder and the cache, no partial result, no hang. (Config files: tests/test_config.py; signals and
journals: tests/test_resilience.py.)"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.errors import UserError
from rerank_eval.pipeline.journal import journal_path
from rerank_eval.results.folder import ResultWriter
from tests import builders


def run(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def bm25_on_scifact(*extra) -> list:
    """The cheapest benchmark command (no model), with the options a test adds."""
    return ["beir", "--datasets", "scifact", "--model", "bm25", *extra]


def one_line_error(result, exit_code: int = 2) -> str:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: ")
    return last


def saved_result(root: Path) -> Path:
    """A real result folder (bm25 over the scifact fixture run) made in `root`."""
    run_file = builders.write_run(root / "scifact.trec", builders.SCIFACT_RUN)
    out = root / "result"
    result = run(*bm25_on_scifact("--run", f"scifact={run_file}", "--out", out))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return saved_result(tmp_path_factory.mktemp("saved"))


# -- nothing escapes its root --------------------------------------------------------------------------


def test_derived_paths_that_leave_their_root_are_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    writer = ResultWriter(tmp_path / "out")
    with pytest.raises(UserError, match="lies outside"):
        writer.add_run("../../escaped", ["q Q0 d 1 1.0 t\n"])
    with pytest.raises(UserError, match="lies outside"):
        journal_path("../../escaped", "0" * 64)
    assert sorted(p.name for p in tmp_path.rglob("*escaped*")) == []


def test_a_model_folder_name_never_leaves_the_output_folder():
    from rerank_eval.pipeline.execute import model_folder_name

    assert model_folder_name("org/model") == "org_model"
    assert model_folder_name("..") == "_.."
    assert "/" not in model_folder_name("/") and model_folder_name("/") not in ("", ".", "..")


# -- output paths ------------------------------------------------------------------------------------


def character_device(folder: Path) -> Path:
    """A character device to write to: a node of /dev/full's made in `folder` where this user may
    make one (as root: a regression would otherwise replace the system's own /dev/full, once on this
    project's machine), else /dev/full itself, which the user cannot replace."""
    node = folder / "full"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except OSError:
        if os.geteuid() == 0:
            pytest.skip("root without the right to make a device node: /dev/full is not written to")
        return Path("/dev/full")
    return node


def test_a_device_is_refused_as_an_output_and_stays_a_device(saved, tmp_path):
    device = character_device(tmp_path)
    result = run("export", saved, "--csv", device)
    assert (
        one_line_error(result)
        == f"error: cannot write {device}: it is a character device; give the path of a regular file"
    )
    assert stat.S_ISCHR(os.stat(device).st_mode)


def test_a_fifo_and_a_directory_are_refused_as_outputs_without_hanging(saved, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert "it is a FIFO (named pipe)" in one_line_error(run("compare", saved, saved, "--json", fifo))
    assert "it is a directory" in one_line_error(run("export", saved, "--csv", tmp_path))
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_symlinked_output_writes_its_target_and_keeps_the_link(saved, tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    result = run("export", saved, "--csv", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and target.read_text().startswith("model,suite,dataset,")


def test_a_symlink_planted_where_an_output_is_staged_is_never_written_through(saved, tmp_path):
    """Outputs were staged under a fixed name (`OUT.tmp.csv`): a symlink put there first by anyone
    sharing the folder made the export overwrite the file it pointed to. Each staging file is new,
    made exclusively under a name no one can guess; the output is written, the bait untouched,
    and nothing is left beside it."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "outputs"
    out.mkdir()
    for name in ("t.csv.tmp.csv", ".t.csv.tmp", "t.csv.tmp"):
        (out / name).symlink_to(victim)
    result = run("export", saved, "--csv", out / "t.csv")
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious\n"
    assert not (out / "t.csv").is_symlink() and (out / "t.csv").read_text().startswith("model,suite,")
    assert sorted(p.name for p in out.iterdir()) == [".t.csv.tmp", "t.csv", "t.csv.tmp", "t.csv.tmp.csv"]


def test_an_output_name_with_a_control_character_is_refused_before_it_is_echoed(saved, tmp_path):
    target = tmp_path / "x\x1b]0;title\x07.csv"
    message = one_line_error(run("export", saved, "--csv", target))
    assert message == f"error: cannot write {str(target)!r}: its name holds a control character"
    assert "\x1b" not in message and not list(tmp_path.iterdir())


def test_two_outputs_to_one_file_are_refused(saved, tmp_path):
    same = tmp_path / "out.txt"
    message = one_line_error(run("compare", saved, saved, "--csv", same, "--json", same))
    assert message == f"error: {same} and {same} are the same file; give each output its own"
    assert not same.exists()


def test_a_failed_write_and_a_failed_clean_up_are_one_line(tmp_path, monkeypatch):
    from rerank_eval.results.outputs import write_output

    def failing(path: Path) -> None:
        path.write_text("partial")
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(
        Path, "unlink", lambda self, missing_ok=False: (_ for _ in ()).throw(OSError(30, "ro"))
    )
    with pytest.raises(UserError, match=r"cannot write .*out\.csv: Read-only file system"):
        write_output(tmp_path / "out.csv", failing)


def test_an_output_stopped_while_written_leaves_no_staged_file(tmp_path):
    """Each output is staged under a new random name: one stopped by Ctrl-C mid-write must not
    leave it behind (they would pile up, one per stop), nor touch the previous output."""
    from rerank_eval.results.outputs import write_output

    target = tmp_path / "out.csv"
    target.write_text("previous\n")

    def stopped(path: Path) -> None:
        path.write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_output(target, stopped)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"] and target.read_text() == "previous\n"


def test_what_a_killed_export_staged_is_removed_by_the_next_one(tmp_path):
    """A kill -9 runs no clean-up: the next export of that file removes what the dead process
    staged, and never what a live one (or someone else) put there."""
    from rerank_eval.cache import process_tag
    from rerank_eval.results.outputs import write_output

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    host = process_tag().partition("-")[0]
    dead = tmp_path / f".out.csv.{host}-{int(gone.stdout)}-0123456789ab.tmp"
    live = tmp_path / f".out.csv.{process_tag()}-0123456789ab.tmp"
    other_host = tmp_path / f".out.csv.elsewhere-{int(gone.stdout)}-0123456789ab.tmp"
    unrelated = tmp_path / ".out.csv.notes.tmp"
    for left in (dead, live, other_host, unrelated):
        left.write_text("partial")
    write_output(tmp_path / "out.csv", lambda path: path.write_text("new\n"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out.csv", live.name, other_host.name, unrelated.name]
    )


def test_a_result_folder_under_a_regular_file_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    run_file = builders.write_run(tmp_path / "scifact.trec", builders.SCIFACT_RUN)
    result = run(*bm25_on_scifact("--run", f"scifact={run_file}", "--out", blocker / "out"))
    # (named as given, not by the folder it is staged in)
    assert (
        one_line_error(result)
        == f"error: cannot create the result folder {blocker / 'out'}: {blocker} is not a folder"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "scifact.trec"]


def test_a_result_folder_named_as_a_file_there_is_one_line(tmp_path):
    taken = tmp_path / "README.md"
    taken.write_text("x")
    run_file = builders.write_run(tmp_path / "scifact.trec", builders.SCIFACT_RUN)
    result = run(*bm25_on_scifact("--run", f"scifact={run_file}", "--out", taken))
    assert one_line_error(result) == f"error: a file named {taken} exists already; choose another --out"
    assert taken.read_text() == "x"


# -- damaged result folders -----------------------------------------------------------------------------


def damage_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def boolean_reference(manifest: dict) -> None:
    manifest["datasets"][0]["first_stage"]["reference_ndcg10"] = True


def beyond_every_float_reference(manifest: dict) -> None:
    manifest["datasets"][0]["first_stage"]["reference_ndcg10"] = 10**400


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: damage_manifest(f, lambda m: m["protocol"].update(top_k="ten")),
         "manifest.json is damaged: protocol.top_k should be an integer, not 'ten'"),
        (lambda f: damage_manifest(f, lambda m: m["datasets"][0].update(in_average="yes")),
         "manifest.json is damaged: datasets[0].in_average should be true or false, not 'yes'"),
        (lambda f: damage_manifest(f, lambda m: m.update(datasets={"a": 1})),
         "manifest.json is damaged: datasets is not a list"),
        (lambda f: damage_manifest(f, lambda m: m["suite"].update(groups={"cqadupstack": "android"})),
         "manifest.json is damaged: suite.groups.cqadupstack is not a list"),
        (lambda f: damage_manifest(f, lambda m: m["suite"].update(groups=["cqadupstack"])),
         "manifest.json is damaged: suite.groups is not a mapping"),
        (lambda f: (f / "manifest.json").write_text("[1, 2]"),
         "is not a rerank-eval manifest (no protocol, suite, model, datasets)"),
        (lambda f: damage_manifest(f, boolean_reference),
         "manifest.json is damaged: datasets[0].first_stage.reference_ndcg10 should be a number, not True"),
        (lambda f: damage_manifest(f, beyond_every_float_reference),
         "manifest.json is damaged: datasets[0].first_stage.reference_ndcg10 should be a number, not 1000"),
        (lambda f: damage_manifest(f, lambda m: m["model"].update(name="x\x1b[2Jy")),
         "manifest.json is damaged: model.name holds a control character: 'x\\x1b[2Jy'"),
        (lambda f: damage_manifest(f, lambda m: m["datasets"][0].pop("coverage")),
         "manifest.json is damaged: datasets[0].coverage is missing"),
        (lambda f: damage_manifest(f, lambda m: m.update(format=3)),
         "has manifest format 3; this rerank-eval reads up to 2 (a newer version wrote it)"),
        (lambda f: damage_manifest(f, lambda m: m.update(format=0)),
         "manifest.json is damaged: format 0 is none of 1 to 2"),
        (lambda f: (f / "per_query.csv").write_text("dataset,stage,query_id,value\nscifact,reranked,1,0.5\n"),
         "per_query.csv is damaged: has columns dataset, stage, query_id, value; expected"),
        (lambda f: (f / "per_query.csv").write_text(
            "dataset,stage,measure,query_id,value\nscifact,reranked,nDCG@10,1,nan\n"),
         "per_query.csv is damaged: line 2: value 'nan' is not a finite number"),
        (lambda f: (f / "per_query.csv").write_text(
            "dataset,stage,measure,query_id,value\nscifact,reranked,nDCG@10,1,high\n"),
         "per_query.csv is damaged: line 2: value 'high' is not a finite number"),
        (lambda f: (f / "per_query.csv").write_text(
            "dataset,stage,measure,query_id,value\nscifact,reranked,nDCG@10,1,-5\n"),
         "per_query.csv is damaged: line 2: value '-5' is negative"),
        (lambda f: (f / "per_query.csv").write_text(
            "dataset,stage,measure,query_id,value\nscifact,reranked,nDCG@10,1,0.5\nscifact,reranked,nDCG@10,1,0.7\n"),
         "per_query.csv is damaged: line 3: nDCG@10 of query 1 (scifact, reranked) appears twice"),
        (lambda f: (f / "per_query.csv").write_text(  # pandas would take the first column as an index
            "dataset,stage,measure,query_id,value\nscifact,reranked,nDCG@10,1,0.5,9\n"),
         "per_query.csv is damaged: ParserWarning"),
        (lambda f: (f / "per_query.csv").write_text(""), "per_query.csv is damaged: EmptyDataError"),
        (lambda f: (f / "manifest.json").write_text('{"protocol": {'),
         "manifest.json is damaged: not JSON (Expecting property name enclosed in double quotes, line 1)"),
        (lambda f: (f / "manifest.json").write_text("[" * 100_000 + "]" * 100_000),
         "manifest.json: RecursionError"),
        (lambda f: (f / "manifest.json").write_text(
            (f / "manifest.json").read_text().replace('"model": {', '"model": {"name": "bm25", ', 1)),
         "manifest.json is damaged: an object names 'name' twice"),
        (lambda f: (f / "manifest.json").write_bytes(b"\xff" + (f / "manifest.json").read_bytes()),
         "manifest.json is damaged: not UTF-8 text"),
        (lambda f: (f / "per_query.csv").write_bytes(b"\xff" + (f / "per_query.csv").read_bytes()),
         "per_query.csv is damaged: not UTF-8 text"),
        (lambda f: os.mkfifo(f / "per_query.csv", 0o600) if not (f / "per_query.csv").unlink() else None,
         "per_query.csv is a FIFO (named pipe)"),
        (lambda f: (f / "manifest.json").unlink() or (f / "manifest.json").symlink_to("/dev/zero"),
         "manifest.json is a character device"),
        (lambda f: os.truncate(f / "per_query.csv", 300 * 2**20),
         "per_query.csv holds 314,572,800 bytes, more than 268,435,456"),
    ],
    ids=["type", "bool", "list", "groups", "groups mapping", "foreign", "number", "beyond float", "escape",
         "missing", "newer format", "format 0", "column", "nan",
         "text", "negative", "duplicate", "extra field", "empty", "truncated manifest",
         "nested", "key twice", "manifest not utf-8", "table not utf-8", "fifo", "device", "huge"],
)  # fmt: skip
def test_a_damaged_result_folder_is_one_line_naming_the_file(saved, tmp_path, damage, message):
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    damage(copy)
    for args in (["export", copy], ["compare", saved, copy]):
        assert message in one_line_error(run(*args))


def test_a_per_query_table_that_fills_memory_is_one_line(saved, monkeypatch):
    """Within the file limit, pandas may still run out of memory on a table of long fields."""
    import pandas as pd

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(pd, "read_csv", out_of_memory)
    assert one_line_error(run("export", saved)) == f"error: {saved / 'per_query.csv'} does not fit in memory"


def test_per_query_values_edited_by_hand_are_not_read_as_the_result(saved, tmp_path):
    """A well-formed per_query.csv with one value changed would give other tables without a word;
    the manifest's hash of the file the run wrote tells it (results written before it are read)."""
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    lines = (copy / "per_query.csv").read_text().splitlines(keepends=True)
    dataset, stage, measure, query, value = lines[1].rstrip("\n").split(",")
    lines[1] = f"{dataset},{stage},{measure},{query},{float(value) / 2}\n"
    (copy / "per_query.csv").write_text("".join(lines))
    for args in (["export", copy], ["compare", saved, copy]):
        assert one_line_error(run(*args)).endswith(
            "per_query.csv is not the file the run wrote (its SHA-256 is not manifest.json's "
            "per_query_sha256): the folder was edited or damaged"
        )
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["per_query_sha256"]  # as an earlier version wrote it
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert run("export", copy).exit_code == 0
    assert "does not exist" in one_line_error(run("export", tmp_path / "nowhere"))


def edit_per_query(folder: Path, change) -> None:
    """per_query.csv read, changed by `change` (a DataFrame to a DataFrame) and written back as the
    writer writes it: what a hand edit that keeps the file well formed leaves."""
    import pandas as pd

    path = folder / "per_query.csv"
    frame = pd.read_csv(path, dtype={"query_id": str}, keep_default_na=False)
    change(frame).to_csv(path, index=False)
    builders.reseal(folder)  # as a result holding these values: what is checked here is the values


def first_line(measure: str, stage: str = "reranked"):
    return lambda frame: frame.index[(frame.measure == measure) & (frame.stage == stage)][0]


def set_value(frame, value: float):
    frame.loc[first_line("nDCG@10")(frame), "value"] = value
    return frame


def rename_query(frame):
    frame.loc[first_line("nDCG@10")(frame), "query_id"] = "renamed"
    return frame


def rename_stage(frame):
    frame.loc[first_line("nDCG@10")(frame), "stage"] = "rerank"
    return frame


def added(frame, **fields):
    """`frame` with a copy of its first row, `fields` changed."""
    import pandas as pd

    return pd.concat([frame, pd.DataFrame([{**frame.iloc[0].to_dict(), **fields}])], ignore_index=True)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: damage_manifest(f, lambda m: m.update(complete=False)),
         "is damaged: manifest.json says the run did not complete"),
        (lambda f: damage_manifest(f, lambda m: m.update(datasets=[])),
         "is damaged: manifest.json lists no datasets"),
        (lambda f: damage_manifest(f, lambda m: m["protocol"].update(measures=["banana"])),
         "is damaged: manifest.json's protocol: unknown measure 'banana'"),
        (lambda f: damage_manifest(f, lambda m: m["datasets"].append(m["datasets"][0])),
         "is damaged: manifest.json lists a dataset twice"),
        (lambda f: edit_per_query(f, lambda p: p.drop(index=first_line("nDCG@10", "first_stage")(p))),
         "per_query.csv holds 2 values of scifact (first_stage, nDCG@10); the manifest records 3"),
        (lambda f: edit_per_query(f, lambda p: p[p.measure != "Judged@10"]),
         "per_query.csv holds 0 values of scifact (first_stage, Judged@10); the manifest records 3"),
        (lambda f: edit_per_query(f, rename_query),
         "is damaged: per_query.csv holds query '1' of scifact for some measures, not all"),
        (lambda f: edit_per_query(f, lambda p: added(p, dataset="nfcorpus")),
         "is damaged: per_query.csv holds values of dataset 'nfcorpus', which the manifest does not list"),
        (lambda f: edit_per_query(f, lambda p: added(p, measure="P@5")),
         "is damaged: per_query.csv holds values of measure 'P@5', which the protocol does not name"),
        (lambda f: edit_per_query(f, lambda p: set_value(p, 1e308)),
         "is damaged: per_query.csv line 11: nDCG@10 1e+308 of query 1 is above 1"),
        (lambda f: edit_per_query(f, lambda p: set_value(p, 1.5)),
         "is damaged: per_query.csv line 11: nDCG@10 1.5 of query 1 is above 1"),
        (lambda f: edit_per_query(f, rename_stage),
         "per_query.csv is damaged: line 11: unknown stage 'rerank'"),
        (lambda f: damage_manifest(f, lambda m: m["protocol"].update(top_k=-5)),
         "is damaged: manifest.json's protocol.top_k must be between 1 and 10,000, got -5"),
        (lambda f: damage_manifest(f, lambda m: m["protocol"].update(metrics=[])),
         "is damaged: manifest.json's protocol names no metrics"),
        (lambda f: damage_manifest(f, lambda m: m["protocol"].update(metrics=["P@5"])),
         "is damaged: manifest.json's protocol.metrics names 'P@5', which protocol.measures lacks"),
        (lambda f: damage_manifest(f, lambda m: m["datasets"][0]["coverage"].update(queries_without_run=4)),
         "is damaged: manifest.json's dataset 'scifact': queries_without_run 4 is not between 0 and its "
         "3 judged queries"),
        (lambda f: damage_manifest(f, lambda m: m["datasets"][0]["timings"].update(rerank_seconds=-1e300)),
         "is damaged: manifest.json's dataset 'scifact': a timing or resumed-query count is negative"),
        (lambda f: damage_manifest(f, lambda m: m["datasets"][0]["first_stage"].update(reference_r100=2.0)),
         "is damaged: manifest.json's dataset 'scifact': a published first-stage figure is not between 0 "
         "and 1"),
    ],
    ids=["incomplete", "no datasets", "measure", "dataset twice", "line removed", "measure removed",
         "query renamed", "dataset added", "measure added", "above 1", "1.5", "unknown stage",
         "top-k", "no metrics", "metric without values", "coverage", "timing", "reference"],
)  # fmt: skip
def test_a_result_that_disagrees_with_its_manifest_is_refused(saved, tmp_path, damage, message):
    """Rows removed, added or renamed in per_query.csv, or a manifest edited, would move a mean or
    a test without a word: the table must hold each judged query's value of every measure, once,
    in range. The untouched copy is read (the check does not refuse real results)."""
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    assert run("export", copy).exit_code == 0
    damage(copy)
    for args in (["export", copy], ["compare", saved, copy]):
        assert message in one_line_error(run(*args))


@pytest.mark.parametrize(
    "edit",
    [
        lambda f: damage_manifest(f, lambda m: m["datasets"][0]["coverage"].update(queries_without_run=3)),
        lambda f: damage_manifest(f, lambda m: m["datasets"][0]["first_stage"].update(reference_r100=1.0)),
        lambda f: damage_manifest(f, lambda m: m["datasets"][0]["first_stage"].update(reference_ndcg10=0.0)),
        lambda f: damage_manifest(f, lambda m: m["datasets"][0]["timings"].update(rerank_seconds=0.0)),
        lambda f: edit_per_query(f, lambda p: set_value(p, 1.0)),
        lambda f: edit_per_query(f, lambda p: set_value(p, 0.0)),
    ],
    ids=["every judged query without candidates", "figure 1", "figure 0", "no time", "value 1", "value 0"],
)
def test_a_result_at_the_edges_of_what_a_run_writes_is_read(saved, tmp_path, edit):
    """The range checks refuse what no run writes, and nothing a run can: all 3 judged queries
    without candidates, a published figure of 0 or 1, a value of exactly 0 or 1."""
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    edit(copy)
    result = run("export", copy)
    assert result.exit_code == 0, result.output


def test_a_fraction_above_1_by_rounding_alone_is_read(saved, tmp_path):
    """trec_eval's nDCG of a perfect ranking can land a few ulps above 1: not a damaged result."""
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    edit_per_query(copy, lambda p: set_value(p, 1 + 1e-12))
    result = run("export", copy)
    assert result.exit_code == 0, result.output


def test_a_result_naming_its_measures_as_the_user_spelt_them_is_read(saved, tmp_path):
    """Versions before measures were written under ir_measures' own names wrote the user's spelling
    (NDCG@10) in the manifest and in per_query.csv alike: such a result agrees with itself."""
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)

    def spelt(manifest: dict) -> None:
        protocol = manifest["protocol"]
        protocol["metrics"] = ["NDCG@10" if m == "nDCG@10" else m for m in protocol["metrics"]]
        protocol["measures"] = ["NDCG@10" if m == "nDCG@10" else m for m in protocol["measures"]]
        del manifest["per_query_sha256"]  # those versions did not record it

    damage_manifest(copy, spelt)
    per_query = copy / "per_query.csv"
    per_query.write_text(per_query.read_text().replace(",nDCG@10,", ",NDCG@10,"))
    result = run("export", copy)
    assert result.exit_code == 0, result.output


def test_the_fractions_are_ir_measures_measures_a_perfect_ranking_scores_1_on():
    """Each name in FRACTIONS is a measure of ir_measures' registry (a misspelt one would never be
    checked), and a perfect ranking scores exactly 1 on those pytrec_eval computes here."""
    import ir_measures

    from rerank_eval.results.checks import FRACTIONS

    assert FRACTIONS <= set(ir_measures.measures.registry)
    qrels = {"q": {"a": 2, "b": 1, "c": 0}}
    run = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    names = ["nDCG@10", "P@2", "R@10", "AP", "RR", "Success@1", "Judged@3", "Bpref", "Rprec", "SetR"]
    values = ir_measures.calc_aggregate([ir_measures.parse_measure(n) for n in names], qrels, run)
    assert {str(m): v for m, v in values.items()} == dict.fromkeys(names, 1.0)
    assert {ir_measures.parse_measure(n).NAME for n in names} <= FRACTIONS


def test_an_export_never_overwrites_the_result_it_reads(saved, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    before = (copy / "manifest.json").read_bytes()
    assert "lies inside" in one_line_error(run("export", copy, "--csv", copy / "manifest.json"))
    assert "lies inside" in one_line_error(run("compare", saved, copy, "--markdown", copy / "per_query.csv"))
    assert (copy / "manifest.json").read_bytes() == before
    beside = tmp_path / "table.md"  # beside the results, in the folder that holds them: fine
    assert run("compare", saved, copy, "--markdown", beside, "--force").exit_code == 0 and beside.exists()


def test_an_export_never_writes_into_another_result_folder_or_the_cache(saved, tmp_path, monkeypatch):
    """Into another folder it left that one refused as damaged; into the cache it replaced a score
    journal (those queries were scored again)."""
    other = tmp_path / "other"
    shutil.copytree(saved, other)
    before = (other / "per_query.csv").read_bytes()
    assert one_line_error(run("export", saved, "--csv", other / "per_query.csv")) == (
        f"error: cannot write {other / 'per_query.csv'}: it lies inside {other}, a result folder"
    )
    assert (other / "per_query.csv").read_bytes() == before
    cache = tmp_path / "cache"
    (cache / "journals").mkdir(parents=True)
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(cache))
    journal = cache / "journals" / "key.jsonl"
    assert one_line_error(run("compare", saved, other, "--force", "--markdown", journal)) == (
        f"error: cannot write {journal}: it lies inside the cache RERANK_EVAL_CACHE {cache}"
    )
    assert list((cache / "journals").iterdir()) == []
    # nor into the datasets' or the models' cache, where it could replace a dataset's or a model's file
    # (huggingface_hub reads its variables once, as it is imported: its constant is set instead)
    from huggingface_hub import constants

    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "ird"))
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    for variable, home, name in (
        ("IR_DATASETS_HOME", tmp_path / "ird", "beir/scifact/queries.tsv"),
        ("HF_HUB_CACHE", tmp_path / "hf" / "hub", "models--org--m/snapshots/abc/config.json"),
    ):
        target = home / name
        target.parent.mkdir(parents=True)
        assert one_line_error(run("export", saved, "--csv", target)) == (
            f"error: cannot write {target}: it lies inside the cache {variable} {home}"
        )
        assert not target.exists()
    # the rest of HF_HOME holds nothing a run downloads (a cluster may set HF_HOME=$SCRATCH)
    (tmp_path / "hf" / "results").mkdir()
    assert run("export", saved, "--csv", tmp_path / "hf" / "results" / "summary.csv").exit_code == 0
    # a manifest.json alone (a web app's, at a project's root) makes no result folder
    web = tmp_path / "webapp"
    (web / "results").mkdir(parents=True)
    (web / "manifest.json").write_text('{"name": "an app"}')
    assert run("export", saved, "--csv", web / "results" / "summary.csv").exit_code == 0


def test_what_lies_under_the_staging_name_is_cleared_only_if_a_run_left_it(tmp_path):
    """`OUT.incomplete` as a symlink would send the result elsewhere, and a folder of someone's
    files would be deleted: both are refused and left as they are; what an interrupted run left
    (its files, runs and temporary files) is cleared and the run goes on."""
    out = tmp_path / "out"
    staging = tmp_path / "out.incomplete"
    victim = tmp_path / "victim"
    victim.mkdir()
    staging.symlink_to(victim)
    assert "is in the way of the result" in one_line_error(
        run(*bm25_on_scifact("--first-stage", "bm25s", "--out", out))
    )
    assert list(victim.iterdir()) == [] and staging.is_symlink() and not out.exists()
    staging.unlink()
    staging.mkdir()
    (staging / "notes.txt").write_text("mine")
    assert "holds files no run writes" in one_line_error(
        run(*bm25_on_scifact("--first-stage", "bm25s", "--out", out))
    )
    assert (staging / "notes.txt").read_text() == "mine"
    (staging / "notes.txt").unlink()
    (staging / "runs").mkdir()
    (staging / "runs" / "scifact.trec.tmp").write_text("half a line")
    (staging / "per_query.csv").write_text("dataset")
    result = run(*bm25_on_scifact("--first-stage", "bm25s", "--out", out))
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").is_file() and not staging.exists()


def test_two_runs_given_one_out_never_write_into_one_folder(tmp_path):
    """The run writing `OUT.incomplete` holds it: a second run given the same --out at the same time
    is refused (it used to clear the first's files as a killed run's and publish a mix); once the
    holder ends, however it ends, the folder is a leftover to clear."""
    first = ResultWriter(tmp_path / "out")
    first.add_run("scifact", ["q Q0 d 1 1.0 t\n"])
    with pytest.raises(UserError) as refused:
        ResultWriter(tmp_path / "out")
    assert str(refused.value) == (
        f"another run is writing the result {tmp_path / 'out'} (in {tmp_path / 'out.incomplete'}); wait for "
        "it to end, or choose another folder"
    )
    assert (tmp_path / "out.incomplete" / "runs" / "scifact.trec").is_file()  # the first's, untouched
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from rerank_eval.results.folder "
         "import ResultWriter; ResultWriter(Path(sys.argv[1])); print('held', flush=True); "
         "sys.stdin.read()", str(tmp_path / "other")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(UserError, match="another run is writing"):
        ResultWriter(tmp_path / "other")
    holder.kill()  # as kill -9 would
    holder.wait()
    taken_over = ResultWriter(tmp_path / "other")
    assert [p.name for p in (tmp_path / "other.incomplete").iterdir()] == ["runs"]
    taken_over.abort()
    first.abort()
    assert not (tmp_path / "out.incomplete").exists()
    ResultWriter(tmp_path / "new" / "deeper" / "out").abort()  # its folders are made as needed


def test_a_lock_taken_on_a_folder_its_holder_just_published_is_not_trusted(tmp_path, monkeypatch):
    """Between opening the staging folder and locking it, its holder may publish it (rename) and
    let go: the lock then holds the published result, which must not be emptied as a leftover."""
    import fcntl

    staging = tmp_path / "out.incomplete"
    staging.mkdir()
    (staging / "per_query.csv").write_text("the holder's")
    real_flock = fcntl.flock

    def holder_publishes_first(handle, operation):
        if not (tmp_path / "published").exists():
            staging.rename(tmp_path / "published")
        real_flock(handle, operation)

    monkeypatch.setattr(fcntl, "flock", holder_publishes_first)
    before = open_descriptors()
    writer = ResultWriter(tmp_path / "out")
    assert (tmp_path / "published" / "per_query.csv").read_text() == "the holder's"
    assert [p.name for p in staging.iterdir()] == ["runs"]  # a new folder of its own
    assert open_descriptors() == before + 1  # the lock on it alone, none left on the published one
    writer.abort()
    assert open_descriptors() == before


def test_a_result_folder_put_in_place_during_the_run_is_not_replaced(tmp_path):
    writer = ResultWriter(tmp_path / "out")
    (tmp_path / "out").mkdir()  # e.g. another program's, empty: rename() would replace it silently
    with pytest.raises(UserError, match=r"cannot publish the result as .*/out: .*choose another folder"):
        writer.publish({}, lambda manifest, frame: "")
    assert list((tmp_path / "out").iterdir()) == [] and not (tmp_path / "out.incomplete").exists()


def test_an_out_inside_a_cache_or_with_a_control_character_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "ird"))
    for out in (tmp_path / "cache" / "results", tmp_path / "cache" / "journals" / "x"):
        with pytest.raises(UserError, match=r"inside the cache RERANK_EVAL_CACHE .*/cache; choose another"):
            ResultWriter(out)
    with pytest.raises(UserError, match=r"lies inside the cache IR_DATASETS_HOME .*/ird; choose another"):
        ResultWriter(tmp_path / "ird" / "beir")
    with pytest.raises(UserError, match=r"result folder '.*/a\\nb' holds a control character"):
        ResultWriter(tmp_path / "a\nb")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # a cache that holds the working folder (RERANK_EVAL_CACHE=.) holds every result: not refused
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RERANK_EVAL_CACHE", ".")
    ResultWriter(tmp_path / "results" / "out").abort()


def test_a_cache_inside_the_result_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    """A cache that the run would write inside its own result folder was found only when the
    finished result could not be published (a whole run's work lost, the message blaming
    "something put there during the run")."""
    out = tmp_path / "out"
    for variable in ("RERANK_EVAL_CACHE", "IR_DATASETS_HOME"):
        monkeypatch.setenv(variable, str(out / "cache"))
        with pytest.raises(UserError) as refused:
            ResultWriter(out)
        assert str(refused.value) == (
            f"the cache {variable} {out / 'cache'} lies inside the result folder {out}; choose another folder"
        )
        monkeypatch.setenv(variable, str(tmp_path / "elsewhere"))
    assert not out.exists()
    ResultWriter(tmp_path / "out-beside").abort()


@pytest.mark.parametrize(
    ("stage", "dataset", "message"),
    [
        ({"file": "{nam}.trec"}, {}, "mine.yaml: first_stages.mine.file: '{nam}.trec' may hold {name} only"),
        ({"file": "{name.__class__}"}, {}, "may hold {name} only"),
        ({"file": "{0}"}, {}, "may hold {name} only"),
        ({"file": "runs/{name"}, {}, "may hold {name} only"),
        ({"file": "../x/{name}.trec"}, {}, "first stage mine: file '../x/scifact.trec' is not a path inside"),
        (
            {},
            {"run_file": "/tmp/x.trec"},
            "mine.yaml: suites.mine.datasets[0].run_file: '/tmp/x.trec' is not a path inside the repository",
        ),
        (
            {},
            {"run_name": "../../x"},
            "mine.yaml: suites.mine.datasets[0].run_name: '../../x' is not a path inside the repository",
        ),
        ({"repo": "../../x"}, {}, "mine.yaml: first_stages.mine.repo: '../../x' is not a Hub repository id"),
    ],
)
def test_a_hub_first_stage_names_only_files_inside_its_repository(tmp_path, stage, dataset, message):
    """A config may come from someone else: a run file's path stays inside the repository, and its
    template fills {name} and nothing else (no attribute of it, no other field)."""
    import yaml

    first_stage = {"kind": "hub", "label": "mine", "repo": "org/runs", "file": "{name}.trec", **stage}
    entry = {"key": "scifact", "id": "beir/scifact/test", "first_stage": "mine", **dataset}
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({"first_stages": {"mine": first_stage},
                                      "suites": {"mine": {"datasets": [entry]}}}))  # fmt: skip
    assert message in one_line_error(run("run", "mine", "--config", config, "--model", "bm25"))
    if "mine.yaml" in message:  # the entry itself is wrong: refused as the config is read
        assert message in one_line_error(run("suites", "--config", config))


def test_out_and_config_paths_the_system_refuses_are_one_line(tmp_path):
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    result = run(*bm25_on_scifact("--first-stage", "bm25s", "--out", dangling))
    assert (
        one_line_error(result)
        == f"error: a symbolic link named {dangling} exists already; choose another --out"
    )
    assert not (tmp_path / "nowhere").exists()
    elsewhere = tmp_path / "elsewhere"  # a link to a folder: said as the link, the folder untouched
    elsewhere.mkdir()
    (elsewhere / "mine.txt").write_text("kept")
    linked = tmp_path / "linked"
    linked.symlink_to(elsewhere)
    result = run(*bm25_on_scifact("--first-stage", "bm25s", "--out", linked))
    assert (
        one_line_error(result)
        == f"error: a symbolic link named {linked} exists already; choose another --out"
    )
    assert [p.name for p in elsewhere.iterdir()] == ["mine.txt"]
    long = tmp_path / ("x" * 300)
    assert "File name too long" in one_line_error(run(*bm25_on_scifact("--out", long)))
    just_fits = tmp_path / ("x" * 248)  # its staging name, OUT.incomplete, does not
    result = run(*bm25_on_scifact("--first-stage", "bm25s", "--out", just_fits))
    assert "File name too long" in one_line_error(result)
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    assert "is a symlink loop" in one_line_error(run("suites", "--config", loop))


def test_a_label_with_a_line_break_is_refused_as_the_config_is_read(tmp_path):
    """A label reaches the manifest, which refuses control characters when read back: a YAML `|`
    label ending in a line feed must fail at once, not after the run."""
    config = tmp_path / "mine.yaml"
    config.write_text("suites:\n  mine:\n    average_label: |\n      My average\n    datasets:\n"
                      "      - {key: scifact, id: beir/scifact/test}\n")  # fmt: skip
    message = "suites.mine.average_label: holds a line break or another control character: 'My average\\n'"
    assert message in one_line_error(run("suites", "--config", config))


# -- inputs that are not what they claim to be --------------------------------------------------------------


@pytest.mark.parametrize("manifest", ["fifo", "huge", "no mapping"])
def test_an_out_folder_whose_manifest_is_no_file_or_too_big_is_refused_without_reading_it(tmp_path, manifest):
    """The folder in the way is asked what it holds before the refusal: a named pipe there would
    block that read for ever, and a file of gigabytes would be read whole (and JSON that is no
    mapping has no command to ask for)."""
    import threading

    out = tmp_path / "out"
    out.mkdir()
    if manifest == "fifo":
        os.mkfifo(out / "manifest.json")
    elif manifest == "no mapping":
        (out / "manifest.json").write_text("[1, 2]")
    else:
        with open(out / "manifest.json", "wb") as handle:
            handle.truncate(65 * 2**20)  # (sparse: past the 64 MiB any manifest is held to)
    run_file = builders.write_run(tmp_path / "scifact.trec", builders.SCIFACT_RUN)
    args = bm25_on_scifact("--run", f"scifact={run_file}", "--out", out)
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=run(*args)))
    thread.start()
    thread.join(60)
    if thread.is_alive():  # (unblock the reader, so that the test process can end)
        os.open(out / "manifest.json", os.O_WRONLY | os.O_NONBLOCK)
        pytest.fail("the run blocked reading the folder's manifest.json")
    refused = one_line_error(outcome["result"])
    assert refused == f"error: result folder {out} exists already; choose another --out"


def test_run_inputs_that_are_not_files_are_named_for_what_they_are(tmp_path):
    fifo = tmp_path / "nq.trec"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.trec"
    loop.symlink_to(loop)
    base = bm25_on_scifact("--out", tmp_path / "out")
    assert f"run file for scifact {tmp_path} is a directory, not a file" in one_line_error(
        run(*base, "--run", f"scifact={tmp_path}")
    )
    assert f"run file for scifact {fifo} is a FIFO (named pipe)" in one_line_error(
        run(*base, "--run", f"scifact={fifo}")
    )
    assert f"run file for scifact {loop} is a symlink loop" in one_line_error(
        run(*base, "--run", f"scifact={loop}")
    )
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    os.mkfifo(runs_dir / "scifact.trec")
    message = one_line_error(run(*base, "--runs-dir", runs_dir))
    assert f"run file {runs_dir / 'scifact.trec'} is a FIFO (named pipe), not a file" in message
    assert not (tmp_path / "out").exists()


def test_a_run_sharing_no_document_with_the_corpus_is_refused(tmp_path):
    foreign = {
        query: {f"other-{doc}": score for doc, score in docs.items()}
        for query, docs in builders.SCIFACT_RUN.items()
    }
    run_file = builders.write_run(tmp_path / "scifact.trec", foreign)
    candidates = {doc for query in builders.SCIFACT_QRELS if query in foreign for doc in foreign[query]}
    result = run(*bm25_on_scifact("--run", f"scifact={run_file}", "--out", tmp_path / "out"))
    expected = f"none of the {len(candidates)} candidate documents of the first-stage run for scifact is in"
    assert expected in one_line_error(result)
    assert not (tmp_path / "out").exists()


def test_a_huge_top_k_is_refused_before_any_work(tmp_path):
    result = run(*bm25_on_scifact("--top-k", "9223372036854775808", "--out", tmp_path / "o"))
    assert one_line_error(result) == "error: --top-k must be between 1 and 10,000, got 9223372036854775808"


def test_a_key_given_twice_with_two_values_is_refused(tmp_path):
    """--run scifact=A --run scifact=B: which run was meant? (The same pair twice is harmless.)"""
    result = run(*bm25_on_scifact("--run", "scifact=a.trec", "--run", "scifact=b.trec"))
    assert one_line_error(result) == "error: --run gives scifact twice ('a.trec' and 'b.trec'); give it once"
    result = run(*bm25_on_scifact("--set", "max_length=5", "--set", "max_length=6"))
    assert "--set gives max_length twice" in one_line_error(result)


def test_score_refuses_the_pass_through_and_special_documents_files(tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("a\nb\n")
    assert "the bm25 and first-stage presets keep a first stage's order" in one_line_error(
        run("score", "--model", "bm25", "--query", "q", "--docs", docs)
    )
    for query in ([], ["--query", " "]):
        result = run("score", *query, "--docs", docs)
        assert one_line_error(result) == "error: --query TEXT is required (a query that is not blank)"
    fifo = tmp_path / "docs.fifo"
    os.mkfifo(fifo)
    assert "is a FIFO (named pipe), not a file" in one_line_error(
        run("score", "--query", "q", "--docs", fifo)
    )
    long = tmp_path / "long.txt"
    long.write_text("short\n" + "x" * (17 * 2**20) + "\n")
    result = run("score", "--query", "q", "--docs", long)
    assert f"{long}, line 2: longer than 16 MiB" in one_line_error(result)
    nested = tmp_path / "nested.jsonl"
    nested.write_text('{"text": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    assert "line 1: JSON nested too deeply" in one_line_error(run("score", "--query", "q", "--docs", nested))


def test_score_reads_no_more_than_a_query_s_candidates(monkeypatch, tmp_path):
    from rerank_eval.cli import tools

    monkeypatch.setattr(tools, "SCORE_INPUT_LIMIT", 1000)
    docs = tmp_path / "docs.txt"
    docs.write_text("word " * 300)
    assert "holds more than 0 MiB" in one_line_error(run("score", "--query", "q", "--docs", docs))


def test_the_library_names_its_parameters_and_the_cli_names_its_flags(tmp_path):
    """PyTerrier's split: RunPlan's error says `top_k`, the command line's says `--top-k`."""
    from rerank_eval.config.reader import load_config
    from rerank_eval.errors import ParameterError
    from rerank_eval.pipeline.plan import CandidateOrder, RunPlan

    config = load_config()
    suite = config.suite("beir")
    plan = RunPlan(
        config, suite, suite.select(["scifact"]), 0, ["nDCG@10"], CandidateOrder.parse("first-stage")
    )
    with pytest.raises(ParameterError) as raised:
        plan.validate()
    assert str(raised.value) == "top_k must be between 1 and 10,000, got 0"
    result = run(*bm25_on_scifact("--top-k", "0", "--out", tmp_path / "x"))
    assert one_line_error(result) == "error: --top-k must be between 1 and 10,000, got 0"


def test_an_out_named_as_an_unfinished_run_is_refused_before_any_scoring(tmp_path):
    """The run was done and published, then refused: every reader takes NAME.incomplete for a run
    that did not finish."""
    result = run(*bm25_on_scifact("--out", tmp_path / "zz.incomplete"))
    assert one_line_error(result) == (
        f"error: result folder {tmp_path / 'zz.incomplete'}: a name ending in .incomplete is an unfinished "
        "run's; choose another --out"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seed", ["\u00b2", "\u0661\u0662", "9" * 21, "", "1.5", " 7"])
def test_a_shuffles_seed_is_ascii_digits(tmp_path, seed):
    """str.isdigit() took a superscript (then int() raised a traceback) and Arabic-Indic digits
    (recorded as another seed than was typed)."""
    result = run(*bm25_on_scifact("--candidate-order", f"shuffled:{seed}", "--out", tmp_path / "x"))
    assert one_line_error(result) == (
        f"error: unknown candidate order {f'shuffled:{seed}'!r}; use first-stage, reversed or shuffled:SEED"
    )
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-k", "1_0"], "--top-k': expected an integer, got '1_0'"),
        (["--top-k", "\u0661\u0660"], "--top-k': expected an integer, got '\u0661\u0660'"),  # Arabic-Indic 10
        (["--top-k", "5.0"], "--top-k': expected an integer, got '5.0'"),
    ],
    ids=["underscore", "other digits", "point"],
)
def test_an_integer_option_is_ascii_digits_as_it_is_recorded(tmp_path, args, message):
    """Typer took "1_0" and "5.0" for numbers (other scripts' digits it refused in other words): the
    command line recorded in the manifest then showed another value than the protocol's."""
    result = run(*bm25_on_scifact(*args, "--out", tmp_path / "x"))
    assert one_line_error(result).startswith(f"error: Invalid value for '{message}")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("command", "value", "said"),
    [
        ("bench-encode --passages", "0", "a positive integer"),
        ("bench-encode --passages", "-3", "a positive integer"),
        ("bench-encode --passages", "2_000", "an integer"),
        ("bench-encode --passages", "1e3", "an integer"),
        ("bench-encode --passages", "9" * 5000, "an integer"),  # (int() reads no more than 4,300 digits)
        ("bench-index --docs", "999", "an integer of at least 1,000"),
    ],
    ids=["zero", "negative", "underscore", "exponent", "digits", "below its least"],
)
def test_a_bench_count_is_a_whole_number_in_its_range(command, value, said):
    """Every count of the benches is refused out of its range in one wording; Typer took "2_000"."""
    name, option = command.split()
    message = one_line_error(run(name, option, value))
    assert message.startswith(f"error: Invalid value for '{option}': expected {said}, got '{value[:20]}")
    assert len(message) < 300


def test_a_remedy_names_the_library_parameter_or_the_flag(tmp_path):
    """The fairness guard's way out: `force=True` for a library caller, `--force` on the command line."""
    from rerank_eval.reporting.compare.comparison import Comparison
    from rerank_eval.results.folder import load_result
    from tests.test_comparison import make_result

    one, other = make_result(tmp_path, "one", 0.0), make_result(tmp_path, "other", 0.0, top_k=50)
    with pytest.raises(UserError) as raised:
        Comparison([load_result(one), load_result(other)])
    assert str(raised.value).endswith("(use force=True to compare anyway)")
    assert one_line_error(run("compare", one, other)).endswith("(use --force to compare anyway)")


def test_a_name_too_long_for_the_file_system_is_one_line_wherever_it_is_given(tmp_path, saved):
    """Path.is_dir() and exists() raise on ENAMETOOLONG (not only False): every place a path is
    first looked at, a config's included, ends in the same one line."""
    long = "a" * 300
    config = tmp_path / "long.yaml"
    config.write_text(f"suites:\n  long:\n    defaults: {{first_stage: bm25s}}\n    datasets:\n"
                      f"      - {{key: k, path: {long}}}\n")  # fmt: skip
    for args in (
        ["run", "long", "--config", config, "--model", "bm25"],
        [*bm25_on_scifact()[:-2], "--model", long],
        [*bm25_on_scifact("--first-stage", f"dense:{long}")],
        [*bm25_on_scifact("--runs-dir", long)],
        ["export", long, "--csv", tmp_path / "t.csv"],
        ["compare", saved, long],
    ):
        error = one_line_error(
            run(*args, *(["--out", tmp_path / "out"] if args[0] in ("run", "beir") else []))
        )
        assert error.startswith("error: ") and long in error, (args, error)
        assert not (tmp_path / "out").exists() and not (tmp_path / "t.csv").exists()


def test_a_missing_folder_named_as_an_unfinished_run_is_said_to_be_missing(tmp_path, saved):
    """It was called an incomplete result: the name was judged before the folder was looked for."""
    missing = tmp_path / "gone.incomplete"
    assert one_line_error(run("export", missing)) == f"error: {missing} does not exist"
    shutil.copytree(saved, missing)
    assert one_line_error(run("export", missing)) == (
        f"error: {missing} is an incomplete result (the run did not finish)"
    )


def test_a_symlink_loop_is_one_line_wherever_a_path_is_given(tmp_path, saved):
    """Path.resolve() raises RuntimeError on a loop (Python < 3.13), other calls OSError ELOOP:
    a folder to export or compare, an output file or a model folder that is a loop is one line."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    loop = tmp_path / "a"
    for args in (
        ["export", loop],
        ["compare", saved, loop],
        ["export", saved, "--csv", loop],
        ["compare", saved, "--csv", loop],
        [*bm25_on_scifact()[:-2], "--model", loop, "--out", tmp_path / "out"],
    ):
        error = one_line_error(run(*args))
        assert "symlink loop" in error and str(loop) in error, (args, error)  # (a, b: no "loop" in the path)
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("length", [4000, 4001, 10_000])
def test_a_long_error_line_keeps_2000_characters_at_each_end(length, capsys):
    from rerank_eval.cli.app import print_error

    message = "".join(chr(97 + i % 26) for i in range(length))
    print_error(message)
    printed = capsys.readouterr().err.rstrip("\n")
    kept = (
        message
        if length <= 4000
        else f"{message[:2000]} ... ({length - 4000:,} characters left out) ... {message[-2000:]}"
    )
    assert printed == f"error: {kept}"


def test_an_error_quoting_a_huge_value_loses_its_middle_and_keeps_its_end():
    from rerank_eval.cli.app import ERROR_END_CHARACTERS

    result = run("beir", "--datasets", "x" * 10_000)
    error = one_line_error(result)
    assert len(error) < 2 * ERROR_END_CHARACTERS + 100 and " characters left out) ... " in error
    assert error.endswith("or BEIR-13 for those in its average")  # what to do stays


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(
    ("leftover", "cleared"),
    [
        ({"summary.csv.tmp": "half", "runs/x.trec.tmp": "half"}, True),  # a run's temporary files
        ({"runs/x.trec": "q Q0 d 1 1.0 t\n", "summary.csv": "a"}, True),  # a run's files, killed after them
        ({"summary.csv.tmp": "half", "mine.txt": "mine"}, False),  # a temporary file beside another's
        ({"runs/notes.txt": "mine"}, False),
        ({"runs/x.trec/": None}, False),  # a folder where a run file would be
        ({"runs": "a file named runs"}, False),
        ({"summary.csv": "->target"}, False),  # a symlink: its target is not the run's
        ({"runs/x.trec": "->target"}, False),
    ],
    ids=[
        "temporary-files",
        "run-files",
        "temporary-beside-other",
        "other-file-in-runs",
        "folder-in-runs",
        "runs-a-file",
        "symlink",
        "symlink-in-runs",
    ],
)
def test_a_leftover_staging_folder_is_cleared_only_if_it_holds_what_a_run_writes(tmp_path, leftover, cleared):
    staging = tmp_path / "out.incomplete"
    (tmp_path / "target").write_text("someone's")
    for name, content in leftover.items():
        path = staging / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir()
        elif content.startswith("->"):
            path.symlink_to(tmp_path / content[2:])
        else:
            path.write_text(content)
    before = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*"))
    if cleared:
        writer = ResultWriter(tmp_path / "out")
        assert not [p for p in staging.rglob("*") if p.is_file()]  # the killed run's files are gone
        writer.abort()
        return
    with pytest.raises(UserError, match="holds files no run writes; remove it, or choose another folder"):
        ResultWriter(tmp_path / "out")
    assert sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*")) == before
    assert (tmp_path / "target").read_text() == "someone's"


def test_a_temporary_file_never_vouches_for_the_files_beside_it(tmp_path):
    """Whatever order the folder lists them in (its file system's), one file no run writes beside a
    run's temporary files keeps the folder from being taken for a run's, and so from being cleared."""
    from rerank_eval.results import staging

    for i in range(20):
        folder = tmp_path / f"s{i}.incomplete"
        folder.mkdir()
        (folder / "mine.txt").write_text("mine")
        (folder / f"summary.csv.{i}.tmp").write_text("half")
        assert staging.left_by_a_run(folder) is False, i


def test_a_folder_locked_elsewhere_gone_or_replaced_is_not_held_ahead(tmp_path, monkeypatch):
    """Two runs must never share one default folder: hold_ahead holds only what it locked itself."""
    from rerank_eval.results import staging

    folder = tmp_path / "claimed"
    folder.mkdir()
    other = staging.try_lock(folder)
    assert isinstance(other, int)
    try:
        assert staging.hold_ahead(folder) is False  # locked by another run
    finally:
        staging.release(other)
    assert staging.hold_ahead(tmp_path / "gone") is False
    monkeypatch.setattr(staging, "same_folder", lambda *args: False)  # replaced in between
    assert staging.hold_ahead(folder) is False
    monkeypatch.undo()
    held = staging.try_lock(folder)  # (and the lock it took was given back)
    assert isinstance(held, int)
    staging.release(held)


def test_the_staging_lock_is_given_back_however_the_claim_ends(tmp_path, monkeypatch):
    """A refused claim, one interrupted while clearing and a released one leave no descriptor (and so
    no lock) behind; a file at the staging name is in the way."""
    from rerank_eval.results import staging

    folder, final = tmp_path / "out.incomplete", tmp_path / "out"
    before = open_descriptors()
    held = staging.claim(folder, final)
    with pytest.raises(UserError, match="another run is writing"):
        staging.claim(folder, final)
    staging.release(held)
    assert open_descriptors() == before
    (folder / "per_query.csv").write_text("left")
    with monkeypatch.context() as patch:
        patch.setattr(staging.Path, "unlink", lambda self: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            staging.claim(folder, final)
    assert open_descriptors() == before
    staging.release(staging.claim(folder, final))  # not held by the interrupted claim
    assert open_descriptors() == before
    shutil.rmtree(folder)
    folder.write_text("a file")
    with pytest.raises(UserError, match="is in the way of the result"):
        staging.claim(folder, final)


def test_a_model_folder_is_checked_before_it_is_hashed_and_an_unreadable_file_is_one_line(
    tmp_path, monkeypatch
):
    """A config may name / or /usr as a model: that is said at once, without hashing the tree."""
    from rerank_eval.models import checkpoint

    def no_hashing(folder):
        raise AssertionError(f"hashed {folder}")

    with monkeypatch.context() as patched:
        patched.setattr(checkpoint, "folder_sha256", no_hashing)
        with pytest.raises(
            UserError, match=r"checkpoint /usr has no config.json or modules.json \(not a model folder\)"
        ):
            checkpoint.resolve_checkpoint("/usr")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "weights.bin").symlink_to("/proc/self/mem")  # a regular file no read gets through
    with pytest.raises(UserError, match=r"cannot read .*weights.bin in model folder .*: Input/output error"):
        checkpoint.resolve_checkpoint(str(folder))
    (folder / "weights.bin").unlink()
    (folder / "weights.bin").write_bytes(b"w")
    assert checkpoint.resolve_checkpoint(str(folder)).content_sha256 == checkpoint.folder_sha256(folder)
    with open(folder / "tokenizer.json", "wb") as huge:  # sparse: takes no disk
        huge.truncate(checkpoint.MAX_PARSED_FILE + 1)
    with monkeypatch.context() as patched:
        patched.setattr(checkpoint, "folder_sha256", no_hashing)  # said before the bytes are read
        with pytest.raises(UserError) as refused:
            checkpoint.resolve_checkpoint(str(folder))
    assert str(refused.value) == (
        f"checkpoint {folder}: tokenizer.json holds 134,217,729 bytes, more than 134,217,728 "
        "(no tokenizer or config is that large)"
    )
    (folder / "tokenizer.json").unlink()
    layered = tmp_path / "st"  # sentence-transformers with its transformer in a module folder
    (layered / "0_Transformer").mkdir(parents=True)
    (layered / "modules.json").write_text("[]")
    (layered / "0_Transformer" / "config.json").write_text("{}")
    assert checkpoint.resolve_checkpoint(str(layered)).folder == layered


@pytest.mark.parametrize("option", ["--model", "--run", "--first-stage", "--out"])
@pytest.mark.parametrize("character", ["\x1b[31m", "\u202e"])  # an escape; a right-to-left override
def test_an_argument_holding_a_control_character_is_refused_before_any_work(tmp_path, option, character):
    """A checkpoint folder named with an escape was scored in full, then refused as the manifest
    was written ("model.name holds a control character"). A text-direction override passed: the
    name `m<RLO>red` shows as `mder` in every table."""
    named = tmp_path / f"m{character}red"
    value = {"--run": f"scifact={named}", "--first-stage": f"dense:{named}"}.get(option, str(named))
    arguments = {"--model": "bm25", "--out": str(tmp_path / "out"), option: value}
    result = run("beir", "--datasets", "scifact", *[x for pair in arguments.items() for x in pair])
    shown = repr(value)
    assert one_line_error(result) == (
        f"error: {option} {shown}: holds a control character (a line break, tab, escape or "
        f"text-direction control)"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_settings_value_may_hold_a_line_break_as_the_packaged_prompts_do(tmp_path):
    """qwen3-embedding-0.6b's query prefix spans two lines; the same value given on the command
    line is a setting (recorded, never a file name), not refused as a name would be."""
    run_file = builders.write_run(tmp_path / "scifact.trec", builders.SCIFACT_RUN)
    result = run(*bm25_on_scifact("--run", f"scifact={run_file}", "--out", tmp_path / "out",
                                  "--set", "note=a\nb"))  # fmt: skip
    assert "control character" not in result.output
    named = run(*bm25_on_scifact("--set", "no\tte=x", "--out", tmp_path / "other"))
    assert "error: --setting 'no\\tte': holds a control character" in named.output


def bm25s_suite(folder: Path, entry: str) -> Path:
    """mine.yaml in `folder`: a suite `mine` of one dataset `entry` (a YAML mapping) under bm25s."""
    config = folder / "mine.yaml"
    config.write_text(
        f"suites:\n  mine:\n    defaults: {{first_stage: bm25s}}\n    datasets:\n      - {entry}\n"
    )
    return config


def test_a_dataset_file_that_fails_when_read_is_one_line(tmp_path):
    """/proc/self/mem is a regular file whose reads fail: named, not a traceback."""
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "fox"}\n')
    (tmp_path / "r.txt").write_text("q1 0 d1 1\n")
    config = bm25s_suite(tmp_path, "{key: m, corpus: /proc/self/mem, queries: q.jsonl, qrels: r.txt}")
    result = run("run", "mine", "--config", config, "--model", "bm25", "--out", tmp_path / "out")
    assert one_line_error(result) == "error: cannot read /proc/self/mem: Input/output error"
    assert not (tmp_path / "out").exists()
    from rerank_eval.textlines import numbered_lines

    with pytest.raises(UserError, match=r"cannot read /proc/self/mem, line 1: Input/output error"):
        list(numbered_lines(Path("/proc/self/mem")))


def test_folders_that_killed_runs_without_out_left_are_removed_by_the_next_such_run(tmp_path, monkeypatch):
    """A run killed outright (kill -9) cannot give its claim back. The next run of the same models
    and suite removes what such runs left (unlocked, holding only staging folders), and nothing
    else: a live run's claim, another command's leftovers, a published model's result, a folder
    holding a file no run writes."""
    from rerank_eval.cli import result_folder

    monkeypatch.chdir(tmp_path)
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    claim = "import sys; from rerank_eval.cli import result_folder as r; "
    claim += "print(r.default_out(sys.argv[1].split(','), 'mine'), flush=True); "
    live = subprocess.Popen(
        [sys.executable, "-c", claim + "import time; time.sleep(60)", "bm25"],
        stdout=subprocess.PIPE, text=True, env=environment, cwd=tmp_path,
    )  # fmt: skip
    try:
        held = Path(live.stdout.readline().strip() + ".incomplete")
        killed = subprocess.run(
            [sys.executable, "-c", claim + "import os; os.kill(os.getpid(), 9)", "bm25"],
            capture_output=True, text=True, env=environment, cwd=tmp_path,
        )  # fmt: skip
        assert killed.returncode == -9, killed.stderr
        left = Path(killed.stdout.strip() + ".incomplete")
        assert left.is_dir() and held.is_dir() and left != held
        results = Path("results")
        publishing = results / "bm25-mine-20261130-235959.incomplete"  # killed while publishing
        (publishing / "runs").mkdir(parents=True)
        (publishing / "runs" / "scifact.trec").write_text("q1 Q0 d1 1 1.0 x\n")
        (publishing / "per_query.csv").write_text("dataset,stage,measure,query_id,value\n")
        several = results / "bm25+minilm-bi-mine-20261130-235959"  # killed in its first model
        (several / "minilm-bi.incomplete" / "runs").mkdir(parents=True)
        noted = results / "bm25+minilm-bi-mine-20261130-235959-2"  # as killed, and a file beside
        (noted / "minilm-bi.incomplete" / "runs").mkdir(parents=True)
        (noted / "notes.txt").write_text("mine")
        published = results / "bm25+ce-mine-20261130-235959"  # killed after its first model published
        (published / "bm25").mkdir(parents=True)
        (published / "bm25" / "manifest.json").write_text("{}")
        (published / "ce.incomplete").mkdir()
        other = results / "minilm-bi-mine-20261130-235959.incomplete"  # another command's
        other.mkdir()
        mine = results / "bm25-mine-20261130-235959-2.incomplete"
        (mine / "notes.txt").parent.mkdir()
        (mine / "notes.txt").write_text("mine")  # a folder holding what no run writes
        kept = {held, several, noted, published, other, mine}

        fresh = result_folder.default_out(["bm25"], "mine")
        result_folder.release_default_out(fresh, ["bm25"])
        assert set(results.iterdir()) == kept  # `left` and `publishing` removed
        for models in (["bm25", "minilm-bi"], ["bm25", "ce"]):
            result_folder.release_default_out(result_folder.default_out(models, "mine"), models)
        assert set(results.iterdir()) == kept - {several}
    finally:
        live.kill()
        live.wait()


def test_a_several_model_run_without_out_killed_after_a_model_published_is_finished_in_its_folder(
    tmp_path, monkeypatch
):
    """The same command run again finishes the killed run's folder: before, it made a new one and
    left the old one, which `export` and `compare` read as a finished result of fewer models. Only
    the newest folder of those models and suite is finished, only this command's, only where
    folders can be locked, and where the inputs changed since, the run takes a folder of its own."""
    from rerank_eval.results import staging

    run_file = builders.write_run(tmp_path / "scifact.trec", builders.SCIFACT_RUN)
    args = ["beir", "--datasets", "scifact", "--model", "bm25", "--model", "minilm-bi", "--top-k", "3",
            "--run", f"scifact={run_file}"]  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "argv", ["rerank-eval", *args])
    results = Path("results")

    def killed_in_its_second_model() -> Path:
        """The newest folder, as a kill -9 while its second model scored leaves it."""
        folder = max(results.iterdir())
        shutil.rmtree(folder / "minilm-bi")
        (folder / "minilm-bi.incomplete" / "runs").mkdir(parents=True)
        return folder

    assert run(*args).exit_code == 0
    (folder,) = results.iterdir()
    whole = {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}
    killed_in_its_second_model()
    older = results / folder.name.replace("-20", "-19", 1)  # another command's, unfinished, older
    shutil.copytree(folder, older)
    manifest = json.loads((older / "bm25" / "manifest.json").read_text())
    (older / "bm25" / "manifest.json").write_text(json.dumps({**manifest, "command": ["x", "other"]}))

    again = run(*args)
    assert again.exit_code == 0, again.output
    assert f"finishing {folder}, which a stopped run of this command left unfinished" in again.output
    assert f"results: {folder}" in again.output and set(results.iterdir()) == {folder, older}
    finished = {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}
    assert finished.keys() == whole.keys()
    for path in whole:  # the same results (the manifests' times and timings apart)
        assert path.name == "manifest.json" or finished[path] == whole[path], path

    # stopped again, then the run file changed: its published model no longer matches
    killed_in_its_second_model()
    run_file.write_text("".join(run_file.read_text().splitlines(keepends=True)[1:]))
    changed = run(*args)
    assert changed.exit_code == 0, changed.output
    assert f"note: {folder} holds results of this command that its inputs no longer give" in changed.output
    (newer,) = set(results.iterdir()) - {folder, older}
    assert sorted(p.name for p in newer.iterdir()) == ["bm25", "minilm-bi"]

    # where nothing can be locked, a live run's folder cannot be told from a killed one's
    shutil.rmtree(killed_in_its_second_model() / "minilm-bi.incomplete")  # as between two models
    monkeypatch.setattr(staging, "fcntl", None)
    unlocked = run(*args)
    assert unlocked.exit_code == 0 and "finishing" not in unlocked.output
    assert len(list(results.iterdir())) == 4


def test_a_live_several_model_run_named_like_a_default_folder_is_never_swept(tmp_path, monkeypatch):
    """A several-model run given `--out` with a name of the default form does not lock that folder,
    only its models' staging folders: those locks keep the folder (the sweep once removed it)."""
    from rerank_eval.cli import result_folder

    monkeypatch.chdir(tmp_path)
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    parent = Path("results/bm25+ce-mine-20261130-235959")
    holder = (
        "import sys, time; from pathlib import Path; from rerank_eval.results import staging; "
        f"staging.claim(Path('{parent}/ce.incomplete'), Path('{parent}/ce')); print('held', flush=True); "
        "time.sleep(60)"
    )
    live = subprocess.Popen(
        [sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True, env=environment, cwd=tmp_path
    )
    try:
        assert live.stdout.readline().strip() == "held"
        result_folder.release_default_out(result_folder.default_out(["bm25", "ce"], "mine"), ["bm25", "ce"])
        assert (parent / "ce.incomplete" / "runs").is_dir()
    finally:
        live.kill()
        live.wait()


def test_a_file_system_without_locks_claims_names_and_sweeps_nothing(tmp_path, monkeypatch):
    """flock fails with ENOLCK on some network file systems: names are still claimed one per run,
    unlocked, and no folder is taken for a killed run's (none can be told from a live one)."""
    import errno

    from rerank_eval.cli import result_folder
    from rerank_eval.results import staging

    def no_locks(descriptor, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(staging.fcntl, "flock", no_locks)
    left = Path("results/bm25-mine-20261130-235959.incomplete")
    (left / "runs").mkdir(parents=True)
    first = result_folder.default_out(["bm25"], "mine")
    second = result_folder.default_out(["bm25"], "mine")
    assert first != second and left.is_dir()
    assert Path(str(first) + ".incomplete").is_dir() and Path(str(second) + ".incomplete").is_dir()


def test_a_refused_or_stopped_run_without_out_leaves_nothing_behind(tmp_path, monkeypatch):
    """The folder a run claimed for its results is removed again when the run ends without
    results: refused while reading the data, or stopped (SIGTERM, as
    a scheduler sends) while its model loads, which ends it at once with the signal's code."""
    import signal
    import time

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.jsonl").write_text('{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n')
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "a"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    config = bm25s_suite(tmp_path, "{key: k, corpus: c.jsonl, queries: q.jsonl, qrels: qrels.tsv}")
    for models in (["bm25"], ["bm25", "minilm-bi"]):
        arguments = [a for m in models for a in ("--model", m)]
        result = run("run", "mine", "--config", config, *arguments)
        assert result.exit_code == 2 and "d1" in one_line_error(result), result.output
        assert list((tmp_path / "results").iterdir()) == []
    loading = (
        "import sys, time\n"
        "import rerank_eval.rerankers as rerankers\n"
        "def slow(*args, **kwargs):\n"
        "    print('loading', file=sys.stderr, flush=True)\n"
        "    time.sleep(60)\n"
        "rerankers.load_reranker = slow\n"
        "from rerank_eval.cli.app import main\n"
        "sys.argv = ['rerank-eval', 'run', 'mine', '--config', 'mine.yaml', '--model', 'minilm-bi']\n"
        "main()\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-c", loading], stderr=subprocess.PIPE, text=True, env=environment
    )
    try:
        assert process.stderr.readline().strip() == "loading"
        (claimed,) = (tmp_path / "results").iterdir()
        assert claimed.name.startswith("minilm-bi-mine-") and claimed.name.endswith(".incomplete")
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert process.wait(timeout=30) == 143 and time.monotonic() - sent < 20
        assert process.stderr.read().strip().splitlines()[-1] == (
            "error: stopped at once; the scores, corpus shards and indexes finished so far are kept; "
            "to resume: "
            "rerank-eval run mine --config mine.yaml --model minilm-bi"
        )
        assert list((tmp_path / "results").iterdir()) == []
    finally:
        process.kill()


def test_text_direction_marks_are_read_where_arabic_text_holds_them(saved, tmp_path):
    """Names given to write under refuse text-direction controls (above), but Arabic and Persian
    text holds the marks (RLM U+200F, ALM U+061C): ids in run files, prompts in a config and the
    names in results of earlier versions are read with them, as before; a compared run's label
    shows them escaped."""
    from rerank_eval.config.reader import load_config
    from rerank_eval.reporting.compare.comparison import Comparison
    from rerank_eval.results.folder import load_results
    from rerank_eval.runfiles import read_run

    article, prompt = "\u0645\u0642\u0627\u0644\u200f1", "\u0627\u0628\u062d\u062b \u200f(MIRACL)\u200f"
    run = tmp_path / "run.trec"
    run.write_text(f"q1 Q0 {article} 1 2.0 t\nq1 Q0 d\u061c2 2 1.0 t\n", encoding="utf-8")
    assert list(read_run(run).run["q1"]) == [article, "d\u061c2"]
    config = tmp_path / "c.yaml"
    config.write_text(
        "first_stages:\n  f: {kind: bm25s}\nsuites:\n  s:\n    datasets:\n"
        f"      - {{key: a, id: x, first_stage: f, instructions: {{m: '{prompt}'}}}}\n",
        encoding="utf-8",
    )
    assert load_config(config).suite("s").datasets[0].instructions == {"m": prompt}
    base, other = tmp_path / "base", tmp_path / "other"
    shutil.copytree(saved, base)
    shutil.copytree(saved, other)
    damage_manifest(other, lambda m: m["model"].update(name="gte\u200f-arabic"))  # as earlier versions wrote
    assert Comparison(load_results([base, other])).labels == ["bm25", "gte\\u200f-arabic"]
