"""Rules of `score`'s documents file, `fetch`'s advice, the catalog listings and reading result
folders back, each pinned where a plausible slip in the code went unnoticed (a mutation round)."""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
from types import SimpleNamespace

import pytest
from rich.console import Console
from typer.testing import CliRunner

from rerank_eval.cli import app, catalog, tools
from rerank_eval.cli.tools import read_documents_file
from rerank_eval.config.reader import load_config
from rerank_eval.errors import UserError
from rerank_eval.results.folder import check_destination, load_result, load_results
from rerank_eval.textlines import MAX_LINE_BYTES
from tests.test_discoverability import table_rows
from tests.test_hostile_input import one_line_error, saved_result

MiB = 2**20


def run(*args, stdin: bytes | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=stdin)


# -- score --docs: sizes ---------------------------------------------------------------------------------


def test_standard_input_over_64_mib_is_refused_not_cut(monkeypatch):
    """The help promises 64 MiB at most; one byte more is refused, never read as its first 64 MiB."""
    over = (b"x" * (MiB - 1) + b"\n") * 64 + b"y"
    monkeypatch.setattr("sys.stdin", SimpleNamespace(buffer=io.BytesIO(over)))
    with pytest.raises(UserError, match=r"^standard input holds more than 64 MiB; score takes one query"):
        read_documents_file(tools.Path("-"))


def test_documents_of_exactly_the_limit_are_read(monkeypatch, tmp_path):
    monkeypatch.setattr(tools, "SCORE_INPUT_LIMIT", 1000)
    docs = tmp_path / "docs.txt"
    docs.write_bytes(b"abcd\n" * 200)  # 1000 bytes
    assert read_documents_file(docs) == ["abcd"] * 200
    docs.write_bytes(b"abcd\n" * 200 + b"e")
    with pytest.raises(UserError, match="holds more than"):
        read_documents_file(docs)


def test_a_line_of_exactly_max_line_bytes_is_read_and_one_byte_more_refused(tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_bytes(b"a\n" + b"x" * MAX_LINE_BYTES + b"\n")
    assert [len(line) for line in read_documents_file(docs)] == [1, MAX_LINE_BYTES]
    docs.write_bytes(b"a\n" + b"x" * (MAX_LINE_BYTES + 1) + b"\n")
    with pytest.raises(UserError, match=r"docs\.txt, line 2: longer than 16 MiB$"):
        read_documents_file(docs)


def test_a_line_is_measured_in_bytes_not_characters(tmp_path):
    """17 MiB of four-byte characters is 4.25 Mi characters: still over the 16 MiB a line may hold."""
    docs = tmp_path / "docs.txt"
    characters = 17 * MiB // 4
    docs.write_text("\U0001f98a" * characters + "\n", encoding="utf-8")
    assert docs.stat().st_size == 17 * MiB + 1
    with pytest.raises(UserError, match=r"docs\.txt, line 1: longer than 16 MiB$"):
        read_documents_file(docs)


def test_a_missing_documents_file_is_one_line(tmp_path):
    missing = tmp_path / "nowhere.txt"
    result = run("score", "--query", "q", "--docs", missing)
    assert one_line_error(result) == f"error: cannot read {missing}: No such file or directory"


# -- score --docs: .jsonl and plain text --------------------------------------------------------------


def test_a_jsonl_suffix_in_capitals_is_still_json_lines(tmp_path):
    docs = tmp_path / "DOCS.JSONL"
    docs.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    assert read_documents_file(docs) == ["a", "b"]


def test_a_whitespace_only_line_of_a_jsonl_file_is_skipped_as_blank(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"text": "a"}\n   \n\t\n{"text": "b"}\n', encoding="utf-8")
    assert read_documents_file(docs) == ["a", "b"]


@pytest.mark.parametrize("record", ['{"text": 5}', '{"text": null}', '{"text": ["a"]}', '["text"]'])
def test_a_jsonl_text_that_is_no_string_is_refused_in_one_line(tmp_path, record):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"text": "fine"}\n' + record + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"docs\.jsonl, line 2: expected an object with a text field$"):
        read_documents_file(docs)


WARNED = "warning: every line of "


@pytest.mark.parametrize(
    ("content", "warned"),
    [
        ('{"text": "a"}\n\n{"text": "b"}\n', True),  # a blank line between them changes nothing
        (' {"text": "a"}\n{"text": "b"}\n', True),  # JSON may start after spaces
        ('{"text": "a"}\nplain words\n', False),  # not every line
        ('{"text": 1}\n{"text": 2}\n', False),  # no text a .jsonl file would take
    ],
    ids=["blank line", "leading space", "one line plain", "texts not strings"],
)
def test_the_warning_of_json_lines_in_a_plain_file_comes_only_when_every_line_is_one(
    tmp_path, capsys, content, warned
):
    docs = tmp_path / "docs.txt"
    docs.write_text(content, encoding="utf-8")
    lines = read_documents_file(docs)
    assert lines == content.removesuffix("\n").split("\n")  # scored as the whole lines either way
    assert (WARNED in capsys.readouterr().err) is warned


# -- score: the fetch it advises ------------------------------------------------------------------------


def test_score_offline_advises_the_fetch_with_the_config_it_was_given(tmp_path, monkeypatch):
    """The preset may be the user's own config's: a fetch without that --config fetches another."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # caches nothing
    config = tmp_path / "my config.yaml"
    config.write_text("suites:\n  mine:\n    datasets:\n      - {key: v, id: vaswani}\n", encoding="utf-8")
    docs = tmp_path / "docs.txt"
    docs.write_text("one\n", encoding="utf-8")
    result = run("score", "--model", "jina-reranker-v3", "--query", "q", "--docs", docs, "--config", config)
    expected = f"`rerank-eval fetch --model jina-reranker-v3 --config {shlex.quote(str(config))}`"
    assert expected in one_line_error(result)
    assert "'" in shlex.quote(str(config))  # (the space is quoted: the advice can be pasted)


# -- the catalog: models, suites, first-stages, datasets --------------------------------------------------

USER_CONFIG = """\
models:
  my-own:
    family: cross-encoder
    model: org/my-own
    trust_remote_code: true
    package: my_own_pkg
    settings: {max_length: 64, max_batch_tokens: 999}
    unverified: guessed
  bare:
    family: cross-encoder
    description: a local checkpoint
first_stages:
  unchecked: {kind: dense, encoder: ./enc}
suites:
  a-suite-with-a-rather-long-name:
    datasets:
      - {key: outside, id: vaswani, in_average: false}
"""


@pytest.fixture
def user_config(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(USER_CONFIG, encoding="utf-8")
    return path


def listing(width: int, *args) -> str:
    previous = catalog.console
    catalog.console = Console(width=width)
    try:
        result = run(*args)
    finally:
        catalog.console = previous
    assert result.exit_code == 0, result.output
    return result.output


def test_models_says_all_a_preset_needs_and_sets_in_one_line_and_nothing_for_a_bare_one(user_config):
    output = listing(300, "models", "--config", user_config)
    assert (
        "my-own: needs --trust-remote-code; offline from pip package my-own-pkg; "
        "settings max_length=64, max_batch_tokens=999; UNVERIFIED: guessed"
    ) in output.splitlines()
    assert not any(line.startswith("bare:") for line in output.splitlines())
    rows = {row[0]: row[1:] for row in table_rows(output)}
    assert list(rows) == list(load_config(user_config).models)  # the config's order, not the alphabet's
    assert rows["bare"] == ["cross-encoder", "alocalcheckpoint", "", ""]  # its description stands in


def test_a_suite_none_of_whose_rows_is_averaged_says_0_rows(user_config):
    rows = {row[0]: row[1:] for row in table_rows(listing(200, "suites", "--config", user_config))}
    assert rows["a-suite-with-a-rather-long-name"][:2] == [
        "1row",
        "a-suite-with-a-rather-long-nameaverage(0rows)",
    ]


def test_a_suite_name_stays_whole_on_a_terminal_too_narrow_for_the_table(user_config):
    """Squeezed, the other columns give way: the name is never cut to `a-suite-with-a-rather-long-n…`."""
    output = listing(36, "suites", "--config", user_config)
    assert "│ a-suite-with-a-rather-long-name " in output


def test_a_first_stage_checked_against_nothing_shows_a_dash(user_config):
    rows = {row[0]: row[1:] for row in table_rows(listing(200, "first-stages", "--config", user_config))}
    assert rows["unchecked"] == ["dense", "unchecked", "-"]


def test_first_stages_name_shows_the_fallback_where_there_is_one():
    lucene = listing(200, "first-stages", "lucene").splitlines()
    assert lucene[:5] == [
        "name: lucene",
        "kind: lucene",
        "label: Lucene BM25 (Pyserini, flat, language analyzer)",
        "checked against: pyserini-bm25-flat, pyserini-bm25",
        "fallback: bm25s",
    ]
    assert not any(
        line.startswith("fallback:") for line in listing(200, "first-stages", "bm25s").splitlines()
    )


def test_first_stages_name_shows_a_setting_s_letters_as_they_are():
    lines = listing(
        200, "first-stages", "minilm", "--first-stage-set", "query_prefix=requête : "
    ).splitlines()
    assert 'query_prefix: "requête : "' in lines


def test_datasets_heads_the_average_column_with_the_suites_label(user_config):
    output = listing(200, "datasets", "a-suite-with-a-rather-long-name", "--config", user_config)
    assert "In a-suite-with-a-rather-long-name average" in output
    assert "In BEIR-13" in listing(200, "datasets", "beir")


# -- reading result folders back --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return saved_result(tmp_path_factory.mktemp("saved"))


def edited_manifest(folder, edit) -> None:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_a_manifest_over_64_mib_is_refused_before_it_is_read(saved, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    os.truncate(copy / "manifest.json", 64 * MiB + 1)
    assert one_line_error(run("export", copy)) == (
        f"error: cannot read result {copy}: manifest.json holds 67,108,865 bytes, more than 67,108,864"
    )


@pytest.mark.parametrize("written", ["007", "NA"])
def test_query_ids_pandas_would_read_as_numbers_or_missing_are_read_as_written(saved, tmp_path, written):
    """(A result written before per_query_sha256, so that an id may be edited here.)"""
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    edited_manifest(copy, lambda m: m.pop("per_query_sha256"))
    table = (copy / "per_query.csv").read_text(encoding="utf-8").splitlines()
    ids = {line.split(",")[3] for line in table[1:]}
    assert all(i.isdigit() for i in ids)  # numbers all: pandas would guess a numeric column
    first = min(ids)
    lines = [table[0]]
    for line in table[1:]:
        fields = line.split(",")
        fields[3] = written if fields[3] == first else fields[3]
        lines.append(",".join(fields))
    (copy / "per_query.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert set(load_result(copy).per_query.query_id) == (ids - {first}) | {written}


def test_models_recording_the_same_place_are_read_in_name_order(saved, tmp_path):
    """Places given twice (a folder put together by hand) order nothing: names do."""
    parent = tmp_path / "models"
    for name, position in (("c", 1), ("a", 2), ("b", 1)):
        shutil.copytree(saved, parent / name)
        edited_manifest(parent / name, lambda m, p=position: m["model"].update(position=p))
    assert [r.folder.name for r in load_results([parent])] == ["a", "b", "c"]
    edited_manifest(parent / "a", lambda m: m["model"].update(position=3))  # each its own place
    edited_manifest(parent / "b", lambda m: m["model"].update(position=2))
    assert [r.folder.name for r in load_results([parent])] == ["c", "b", "a"]


def test_a_file_named_like_an_unfinished_result_is_not_one(saved, tmp_path, capsys):
    parent = tmp_path / "models"
    shutil.copytree(saved, parent / "bm25")
    (parent / "notes.incomplete").write_text("a file, not a run's folder\n", encoding="utf-8")
    assert [r.folder.name for r in load_results([parent])] == ["bm25"]
    assert "warning" not in capsys.readouterr().err


def test_a_control_character_anywhere_in_a_result_folder_s_path_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"^result folder '.*/a\\nb/out' holds a control character"):
        check_destination(tmp_path / "a\nb" / "out")


@pytest.mark.parametrize("keep_identical", [False, True])
def test_what_is_in_the_way_of_a_result_folder_is_named_as_what_it_is(tmp_path, keep_identical):
    """Only a complete result folder may be kept (`keep_identical`); what it holds is said of a folder."""
    file, folder = tmp_path / "file", tmp_path / "folder"
    file.write_text("x\n", encoding="utf-8")
    folder.mkdir()
    for taken, what in ((file, "a file named"), (folder, "result folder")):
        held = " and holds 2 models' results" if taken == folder else ""
        with pytest.raises(UserError, match=f"^{what} {taken} exists already{held}; choose another"):
            check_destination(taken, keep_identical, holds="2 models' results")
    (folder / "manifest.json").write_text("{}\n", encoding="utf-8")
    assert check_destination(folder, True) is True


def test_a_per_query_table_that_loops_is_told_not_a_traceback(saved, tmp_path):
    """Its size, summed before any result is read, cannot be told: the folder is then refused in
    its own words."""
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    (copy / "per_query.csv").unlink()
    (copy / "per_query.csv").symlink_to("per_query.csv")
    assert one_line_error(run("export", copy)) == (
        f"error: cannot read result {copy}: per_query.csv is a symlink loop"
    )
