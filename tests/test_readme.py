"""The README stays short and true: at most 8 KB, its links lead to pages that exist, every command
it shows parses with the options the CLI has, and its user suite runs as shown."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def readme_commands() -> list[list[str]]:
    """Each `rerank-eval ...` command of the README's shell blocks (comments and `;` split off)."""
    commands = []
    for block in blocks("bash"):
        for line in block.splitlines():
            for part in line.split("#", 1)[0].split(";"):
                words = shlex.split(part)
                if words[:1] == ["rerank-eval"]:
                    commands.append(words[1:])
    return commands


def test_the_readme_fits_in_8_kb_and_links_to_pages_that_exist():
    assert len(README.encode("utf-8")) <= 8 * 1024
    links = re.findall(r"\]\((docs/[^)#]+)", README)
    assert links and all((ROOT / link).is_file() for link in links), links


@pytest.mark.parametrize("words", readme_commands(), ids=lambda words: " ".join(words)[:60])
def test_every_readme_command_parses(words):
    """Click refuses an unknown option before it answers --help, so the command and every option
    the README names exist (their values are checked by the tests of each command)."""
    result = CliRunner().invoke(app, [*words, "--help"])
    assert result.exit_code == 0, result.output


def test_the_readme_user_suite_runs_as_shown(tmp_path, monkeypatch):
    (yaml,) = blocks("yaml")
    (tmp_path / "mine.yaml").write_text(yaml, encoding="utf-8")
    assert len(yaml.splitlines()) == 5
    monkeypatch.chdir(tmp_path)
    args = ["run", "mine", "--config", "mine.yaml", "--model", "bm25", "--out", "out"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "manifest.json").is_file()
