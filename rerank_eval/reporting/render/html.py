"""A neutral table as a self-contained HTML page: no script, no external file, styles inline.

Every text is escaped; the best value of a row is <strong>; averages sit in their own <tbody>
so a rule separates them, as in the terminal and LaTeX forms.
"""

from __future__ import annotations

from html import escape

from rerank_eval.reporting.table import Entry, ResultTable

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #111; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
caption { caption-side: bottom; text-align: left; padding-top: 0.8em; font-size: 0.9em; color: #333; }
caption p { margin: 0.2em 0; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; }
th { border-bottom: 2px solid #111; vertical-align: bottom; }
td.number, th.number { text-align: right; white-space: nowrap; }
tbody.averages { border-top: 2px solid #111; }
h1 { font-size: 1.2em; }
"""


def _cell(entry: Entry, numeric: bool) -> str:
    value = escape(entry.value)
    text = (f"<strong>{value}</strong>" if entry.bold else value) + escape(entry.note)
    return f'<td class="number">{text}</td>' if numeric else f"<td>{text}</td>"


def _body(table: ResultTable, rows: list, css_class: str | None) -> str:
    numeric = [column.numeric for column in table.columns]
    opening = f'<tbody class="{css_class}">' if css_class else "<tbody>"
    lines = [opening]
    for row in rows:
        lines.append("<tr>" + "".join(_cell(e, n) for e, n in zip(row, numeric)) + "</tr>")
    return "\n".join([*lines, "</tbody>"])


def html(table: ResultTable) -> str:
    split = len(table.rows) if table.averages_from is None else table.averages_from
    header = "".join(
        f'<th class="number">{escape(c.name)}</th>' if c.numeric else f"<th>{escape(c.name)}</th>"
        for c in table.columns
    )
    caption = "".join(f"<p>{escape(line)}</p>" for line in table.caption)
    bodies = [_body(table, table.rows[:split], None)]
    if split < len(table.rows):
        bodies.append(_body(table, table.rows[split:], "averages"))
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>{escape(table.title)}</title>",
            f"<style>{STYLE}</style>",
            "</head>",
            "<body>",
            f"<h1>{escape(table.title)}</h1>",
            "<table>",
            f"<caption>{caption}</caption>",
            f"<thead><tr>{header}</tr></thead>",
            *bodies,
            "</table>",
            "</body>",
            "</html>",
            "",
        ]
    )
