"""What a newcomer meets first: the version, a typo answered with the name meant, documents piped
into `score`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rerank_eval import __version__
from rerank_eval.cli import app
from tests.checkpoints import build_cross_encoder


def run(*args, stdin: bytes | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=stdin)


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and result.output == f"rerank-eval {__version__}\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["beir", "--datasets", "scifacts", "--model", "bm25"],
         "error: unknown dataset 'scifacts' in suite 'beir' (did you mean 'scifact'?); known: "),
        (["run", "beri"], "(did you mean 'beir'?)"),
        (["score", "--model", "minilm-by", "--query", "q", "--docs", "-"],
         "error: unknown model 'minilm-by': no preset of that name (did you mean 'minilm-bi'?)"),
    ],
    ids=["dataset", "suite", "model"],
)  # fmt: skip
def test_a_typo_is_answered_with_the_name_meant(args, expected):
    result = run(*args, stdin=b"a document\n")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert expected in line


def test_a_name_far_from_every_known_one_gets_no_guess():
    result = run("beir", "--datasets", "zzzzzz", "--model", "bm25")
    assert result.exit_code == 2 and "did you mean" not in result.output


def test_score_reads_documents_from_standard_input(tmp_path):
    model = build_cross_encoder(tmp_path / "ce")
    docs = "aspirin lowers the risk\n\nvitamin d and bones\n"
    (tmp_path / "docs.txt").write_text(docs, encoding="utf-8")
    from_file = run("score", "--model", model, "--query", "aspirin", "--docs", tmp_path / "docs.txt")
    from_stdin = run("score", "--model", model, "--query", "aspirin", "--docs", "-", stdin=docs.encode())
    assert from_file.exit_code == from_stdin.exit_code == 0, from_stdin.output
    scores = json.loads(from_stdin.output.strip().splitlines()[-1])
    assert len(scores) == 3 and scores == json.loads(from_file.output.strip().splitlines()[-1])


def test_json_lines_given_as_plain_text_are_warned_of(tmp_path):
    """JSON lines piped to `--docs -` are scored as whole lines (a .jsonl file's texts are scored);
    a warning says so, since the scores then include the JSON's keys and quotes."""
    model = build_cross_encoder(tmp_path / "ce")
    lines = '{"text": "aspirin lowers the risk"}\n{"text": "vitamin d"}\n'
    piped = run("score", "--model", model, "--query", "aspirin", "--docs", "-", stdin=lines.encode())
    assert piped.exit_code == 0
    assert "warning: every line of standard input is a JSON object with a text field" in piped.output
    (tmp_path / "docs.jsonl").write_text(lines)
    as_jsonl = run("score", "--model", model, "--query", "aspirin", "--docs", tmp_path / "docs.jsonl")
    assert "warning" not in as_jsonl.output
    plain = run("score", "--model", model, "--query", "aspirin", "--docs", "-", stdin=b"aspirin {x}\n")
    assert "warning" not in plain.output


def test_a_max_length_above_what_the_model_reads_is_said_to_be_capped(tmp_path):
    model = build_cross_encoder(tmp_path / "ce")
    asked = run(
        "score", "--model", model, "--query", "q", "--docs", "-", "--set", "max_length=100000", stdin=b"a b\n"
    )
    assert asked.exit_code == 0, asked.output
    assert f"warning: max_length 100000 is more than {model} reads; " in asked.output
    default = run("score", "--model", model, "--query", "q", "--docs", "-", stdin=b"a b\n")
    assert "max_length" not in default.output


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        (b"\n \n", "error: standard input has no documents"),
        (b"\xff\xfe", "error: standard input is not valid UTF-8"),
    ],
    ids=["empty", "not UTF-8"],
)  # fmt: skip
def test_bad_standard_input_is_one_line(stdin, message, tmp_path):
    model = build_cross_encoder(tmp_path / "ce")
    result = run("score", "--model", model, "--query", "q", "--docs", "-", stdin=stdin)
    assert result.exit_code == 2 and result.output.strip() == message


def test_score_reads_json_lines_as_strictly_as_a_corpus(tmp_path):
    """An escaped character outside the BMP (a surrogate pair) is text; half of one, or a text
    given twice in one object, is refused in one line before any scoring."""
    model = build_cross_encoder(tmp_path / "ce")
    docs = tmp_path / "docs.jsonl"
    for line, message in (
        (
            '{"text": "fox \\ud800"}',
            "docs.jsonl, line 1: 'text' holds half a surrogate pair ('\\ud800'), which is no text",
        ),
        ('{"text": "fox", "text": "dog"}', "docs.jsonl, line 1: the JSON object names 'text' twice"),
    ):
        docs.write_text(line + "\n")
        result = run("score", "--model", model, "--query", "q", "--docs", docs)
        assert result.exit_code == 2 and result.output.strip().endswith(message), result.output
        assert "Traceback" not in result.output
    docs.write_text('{"text": "fox \\ud83e\\udd8a"}\n')
    paired = run("score", "--model", model, "--query", "q", "--docs", docs)
    docs.write_text('{"text": "fox \U0001f98a"}\n')
    literal = run("score", "--model", model, "--query", "q", "--docs", docs)
    assert paired.exit_code == 0 and paired.stdout == literal.stdout, paired.output
