"""A neutral table as a rich table for the terminal, laid out for the width it is printed at.

Nothing a user typed is ever cut: row names keep one line, and a header's label (a run's name)
keeps its words whole. Cells wrap at spaces, so numbers are never cut either. In one piece, the
first of: the framed table; the same without its frame (two spaces between columns); with headers
that name runs as keys ([1], [2], ...) to lines above the table that name them whole; with one space
between columns. Where none fits, the table is printed in parts, each repeating the naming column
(a column that follows another, like W/T/L, stays beside it), each part in the first of the same
unframed forms, then with header words folded. Only a part too wide even then is squeezed by rich,
which folds its cells (no character is lost). A file or a pipe gets a wide console: one framed piece.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from rerank_eval.reporting.table import Entry, ResultTable


@dataclass(frozen=True)
class _Style:
    framed: bool  # rich's frame: a border and a space either side of each column
    keyed: bool = False  # label headers replaced by keys
    gap: int = 2  # unframed: spaces between columns
    whole_headers: bool = True  # no header word folded

    def chrome(self, columns: int) -> int:
        """Characters a line spends outside the cells' text."""
        return 3 * columns + 1 if self.framed else self.gap * (columns - 1)


PLAIN = _Style(framed=False)
ONE_PIECE = (_Style(framed=True), PLAIN, replace(PLAIN, keyed=True), replace(PLAIN, keyed=True, gap=1))
PARTS = (*ONE_PIECE[1:], replace(PLAIN, keyed=True, gap=1, whole_headers=False))


def _text(entry: Entry) -> Text:
    # names come from users' configs, paths and results: Text, never markup; the bold is the
    # value's alone (a Text's own style would cover the note appended to it too)
    return Text.assemble((entry.value, "bold" if entry.bold else ""), entry.note)


def _headers(table: ResultTable, keyed: bool) -> list[str]:
    headers, key = [], 0
    for column in table.columns:
        if keyed and column.label:
            key += 1
            headers.append(f"[{key}]")
        else:
            headers.append(column.terminal or column.name)
    return headers


def _widths(table: ResultTable, headers: list[str], style: _Style, width: int) -> list[int] | None:
    """Each column's width in this style, or None where something would have to be cut.

    A column starts at its natural width; while the line is too long, the widest column still
    above its floor loses a character. The floor: the naming column's longest name; for the
    others, their cells' longest word, their label's unless keyed, their header's if kept whole.
    """
    natural, floor = [], []
    for index, (column, header) in enumerate(zip(table.columns, headers)):
        cells = [row[index].text for row in table.rows]
        natural.append(max(map(cell_len, [*header.split("\n"), *cells])))
        words = [word for cell in cells for word in cell.split()]
        if column.label and not style.keyed:
            words += column.label.split()
        if style.whole_headers:
            words += header.split()
        floor.append(natural[-1] if not column.numeric else max(map(cell_len, words), default=1))
    room = width - style.chrome(len(headers))
    if sum(floor) > room:
        return None
    widths = natural
    while sum(widths) > room:
        widest = max((i for i in range(len(widths)) if widths[i] > floor[i]), key=widths.__getitem__)
        widths[widest] -= 1
    return widths


def _layout(table: ResultTable, width: int, styles: tuple[_Style, ...]) -> tuple[_Style, list[int] | None]:
    """The first style the table fits in, with its widths; else the last, for rich to squeeze."""
    for style in styles:
        widths = _widths(table, _headers(table, style.keyed), style, width)
        if widths is not None:
            return style, widths
    return styles[-1], None


def _table(table: ResultTable, style: _Style, widths: list[int] | None) -> Iterator[RenderableType]:
    headers = _headers(table, style.keyed)
    if style.keyed:
        labelled = [column.name for column in table.columns if column.label]
        yield from (Text(f"[{key}] {name}") for key, name in enumerate(labelled, start=1))
    frame = {} if style.framed else {"box": None, "pad_edge": False, "padding": (0, style.gap, 0, 0)}
    rendered = Table(
        title=Text(table.title) if table.title else None,
        caption=Text("\n".join(table.caption)) if table.caption else None,
        **frame,
    )
    for column, header, column_width in zip(table.columns, headers, widths or [None] * len(headers)):
        rendered.add_column(
            Text(header, overflow="fold"),
            justify="right" if column.numeric else "left",
            no_wrap=not column.numeric,
            width=column_width,
            overflow="fold",
        )
    for index, row in enumerate(table.rows):
        if index == table.averages_from and style.framed:
            rendered.add_section()  # a rule above the averages
        elif index == table.averages_from:
            rendered.add_row()  # unframed: a blank line
        rendered.add_row(*map(_text, row))
    yield rendered


def _part(table: ResultTable, indices: list[int], first: bool, last: bool) -> ResultTable:
    """Some columns of the table after its naming column; the title on the first part, the caption
    under the last."""
    chosen = [0, *indices]
    return ResultTable(
        table.title if first else "",
        [table.columns[i] for i in chosen],
        [[row[i] for i in chosen] for row in table.rows],
        table.caption if last else [],
        table.averages_from,
    )


def _parts(table: ResultTable, width: int) -> list[ResultTable]:
    """Columns packed into parts that fit unframed, a column that follows another kept beside it."""
    groups: list[list[int]] = []
    for index, column in enumerate(table.columns[1:], start=1):
        if column.follows and groups:
            groups[-1].append(index)
        else:
            groups.append([index])
    packed: list[list[int]] = [[]]
    for group in groups:
        candidate = _part(table, packed[-1] + group, False, False)
        if packed[-1] and _widths(candidate, _headers(candidate, False), PLAIN, width) is None:
            packed.append([])
        packed[-1] += group
    return [_part(table, part, i == 0, i == len(packed) - 1) for i, part in enumerate(packed)]


class TerminalTable:
    """A neutral table that `console.print` lays out at the console's width (see the module)."""

    def __init__(self, table: ResultTable) -> None:
        self.table = table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        style, widths = _layout(self.table, options.max_width, ONE_PIECE)
        if widths is not None:
            yield from _table(self.table, style, widths)
            return
        for index, part in enumerate(_parts(self.table, options.max_width)):
            if index:
                yield Text("")
            yield from _table(part, *_layout(part, options.max_width, PARTS))


def terminal_table(table: ResultTable) -> TerminalTable:
    return TerminalTable(table)
