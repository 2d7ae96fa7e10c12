"""A neutral table as a booktabs table float with its whole caption."""

from __future__ import annotations

import re

from rerank_eval.reporting.table import Entry, ResultTable

# Every special character escaped; symbols of the captions become their LaTeX forms. A bracket is
# braced (a row beginning with `[` would be read as the optional argument of the `\\` before it),
# and a grave accent is set as itself, not as an opening quote (an apostrophe stays one).
LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"$<$", ">": r"$>$", "|": r"\textbar{}", "[": "{[}", "]": "{]}", "`": r"\textasciigrave{}",
    "†": r"$^\dagger$", "Δ": r"$\Delta$", "–": "--", "—": "---", "±": r"$\pm$",
}  # fmt: skip


def latex_escape(text: str) -> str:
    """`text` set literally; a hyphen before another is kept apart (`-{}-`), since TeX makes `--`
    an en dash (Pyserini's `--bm25` option)."""
    return "".join(
        "-{}" if character == "-" and text[index + 1 : index + 2] == "-" else LATEX.get(character, character)
        for index, character in enumerate(text)
    )


# A minus sign in a cell's note (a negative Δ or interval end) or of a cell that is a negative
# number (a result's Δ column), not a hyphen as text would set it.
_MINUS = re.compile(r"-(?=\d)")
_NEGATIVE_NUMBER = re.compile(r"-\d+(\.\d+)?")


def _cell(entry: Entry) -> str:
    value = latex_escape(entry.value)
    if _NEGATIVE_NUMBER.fullmatch(entry.value):
        value = "$-$" + value[1:]
    return (rf"\textbf{{{value}}}" if entry.bold else value) + _MINUS.sub("$-$", latex_escape(entry.note))


def latex(table: ResultTable) -> str:
    lines = [
        r"% needs \usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{l" + "r" * (len(table.columns) - 1) + "}",
        r"\toprule",
        " & ".join(latex_escape(column.name) for column in table.columns) + r" \\",
        r"\midrule",
    ]
    for index, row in enumerate(table.rows):
        if index == table.averages_from:
            lines.append(r"\midrule")
        lines.append(" & ".join(map(_cell, row)) + r" \\")
    caption = r" \\ ".join(latex_escape(line) for line in [f"{table.title}.", *table.caption])
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"
