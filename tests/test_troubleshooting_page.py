"""docs/troubleshooting.md quotes messages the code can print: none is stale or invented.

Each quoted message is cut at its placeholders (capitalised names such as PATH or KEY, quoted
example values, numbers, `...`); every remaining piece of six characters or more must appear in
rerank-eval's source, with implicitly concatenated string literals joined.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "troubleshooting.md"
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]*\b|'[^']*'|\.\.\.|\d[\d,]*")


def source_text() -> str:
    text = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "rerank_eval").rglob("*.py"))
    return re.sub(r"\"\s*\n\s*(?:rf|f|r)?\"", "", text)  # "a "\n    f"b" -> "a b"


def quoted_messages() -> list[str]:
    messages = []
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            first_cell = line.split(" | ")[0]
            messages += re.findall(r"`([^`]+)`", first_cell)
    return messages


def test_every_quoted_message_is_one_the_code_prints():
    source = source_text()
    messages = quoted_messages()
    assert len(messages) > 40
    assert all(len(m) < 12 or any(len(p) >= 6 for p in PLACEHOLDER.split(m)) for m in messages)
    stale = []
    for message in messages:
        message = message.removeprefix("warning: ")  # (errors.warn's, before every warning)
        pieces = [p.strip(" :;,()") for p in PLACEHOLDER.split(message)]
        pieces = [p for p in pieces if len(p) >= 6]
        if any(piece not in source for piece in pieces):
            stale.append((message, [p for p in pieces if p not in source]))
    assert not stale, stale
