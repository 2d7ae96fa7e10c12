"""A neutral table as a Markdown (GitHub) table followed by its caption."""

from __future__ import annotations

from rerank_eval.reporting.table import Entry, ResultTable


def _cell(entry: Entry) -> str:
    return (f"**{entry.value}**" if entry.bold else entry.value) + entry.note


def markdown(table: ResultTable) -> str:
    lines = [
        "| " + " | ".join(column.name for column in table.columns) + " |",
        "|---|" + "---:|" * (len(table.columns) - 1),
    ]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in table.rows]
    return "\n".join(lines) + "\n\n" + "  \n".join(table.caption) + "\n"
