"""A neutral table as a Markdown (GitHub) table between its title and its caption."""

from __future__ import annotations

import re

from rerank_eval.reporting.table import Entry, ResultTable

# Text (dataset, model and folder names, captions) as Markdown shows it literally: a `|` would split
# a cell, `_` or `*` start emphasis, `[x](y)` make a link, `<b>` (Pyserini's `<key>`) be read as an
# HTML tag and `&lt;` as an entity, `$x$` be mathematics and `~~x~~` struck through; `p < 0.05` and
# `a & b` are left as they read.
_BACKSLASHED = re.compile(r"[\\`*_\[\]|$~]")
_TAG = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY = re.compile(r"&(?=[A-Za-z#])")


def markdown_escape(text: str) -> str:
    text = _BACKSLASHED.sub(lambda found: "\\" + found.group(), text)
    return _TAG.sub("&lt;", _ENTITY.sub("&amp;", text))


def _cell(entry: Entry) -> str:
    value = markdown_escape(entry.value)
    return (f"**{value}**" if entry.bold else value) + entry.note  # notes hold figures and marks only


def markdown(table: ResultTable) -> str:
    lines = [
        f"**{markdown_escape(table.title)}**",
        "",
        "| " + " | ".join(markdown_escape(column.name) for column in table.columns) + " |",
        "|---|" + "---:|" * (len(table.columns) - 1),
    ]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in table.rows]
    return "\n".join(lines) + "\n\n" + "  \n".join(map(markdown_escape, table.caption)) + "\n"
