"""A neutral table as a rich table for the terminal."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from rerank_eval.reporting.table import Entry, ResultTable


def _text(entry: Entry) -> Text:
    # names come from users' configs, paths and results: Text, never markup
    text = Text(entry.value, style="bold" if entry.bold else "")
    text.append(entry.note)
    return text


def terminal_table(table: ResultTable) -> Table:
    rendered = Table(title=Text(table.title), caption=Text("\n".join(table.caption)))
    for column in table.columns:
        header = Text(column.terminal or column.name)
        if column.numeric:
            rendered.add_column(header, justify="right")
        else:
            rendered.add_column(header, no_wrap=True)
    for index, row in enumerate(table.rows):
        if index == table.averages_from:
            rendered.add_section()
        rendered.add_row(*map(_text, row))
    return rendered
