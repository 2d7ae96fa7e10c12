"""The README stays short and true: at most 8 KB, its links lead to pages that exist, every command
it and docs/ show parses with the options the CLI has, and its user suite runs as shown."""

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


def shell_blocks(text: str) -> list[str]:
    """The fenced `bash` blocks of a page, their continued lines joined."""
    return [
        block.replace("\\\n", " ") for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
    ]


def documented_commands() -> list[tuple[str, list[str]]]:
    """Each `rerank-eval ...` command the README and docs/ show, with its page: in shell blocks
    (comments split off; `;`, `&&` and pipes separate commands; leading `VAR=value` words dropped)
    and in inline code spans. A span eliding its command (`...`) names no options to check."""
    commands = []
    for page in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        text = page.read_text(encoding="utf-8")
        for block in shell_blocks(text):
            for line in block.splitlines():
                for part in re.split(r";|&&|\|", line.split("#", 1)[0]):
                    words = shlex.split(part)
                    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                        words = words[1:]
                    if words[:1] == ["rerank-eval"]:
                        commands.append((page.name, words[1:]))
        prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M).replace("\n", " ")
        for span in re.findall(r"`rerank-eval ([^`]+)`", prose):
            if "..." not in span:
                commands.append((page.name, shlex.split(span)))
    return commands


def test_the_readme_fits_in_8_kb_and_links_to_pages_that_exist():
    assert len(README.encode("utf-8")) <= 8 * 1024
    links = re.findall(r"\]\((docs/[^)#]+)", README)
    assert links and all((ROOT / link).is_file() for link in links), links


def test_the_readme_and_docs_show_commands():
    pages = {page for page, _ in documented_commands()}
    assert {"README.md", "dense-first-stage.md", "comparing.md", "operations.md"} <= pages
    assert len(documented_commands()) > 60


@pytest.mark.parametrize(
    ("page", "words"), documented_commands(), ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else v
)
def test_every_documented_command_parses(page, words):
    """Click refuses an unknown option before it answers --help, so the command and every option
    the page names exist (their values are checked by the tests of each command)."""
    result = CliRunner().invoke(app, [*words, "--help"])
    assert result.exit_code == 0, f"{page}: rerank-eval {' '.join(words)}: {result.output}"


def test_the_readme_user_suite_runs_as_shown(tmp_path, monkeypatch):
    (yaml,) = blocks("yaml")
    (tmp_path / "mine.yaml").write_text(yaml, encoding="utf-8")
    assert len(yaml.splitlines()) == 5
    monkeypatch.chdir(tmp_path)
    args = ["run", "mine", "--config", "mine.yaml", "--model", "bm25", "--out", "out"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "manifest.json").is_file()
