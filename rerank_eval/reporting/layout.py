"""Which rows a result table has, decided once for the report of one result and for a comparison.

Datasets come in suite order; a group's members (CQADupStack's forums) fold into one row at the
place of the first; then the suite's headline average (or a subset of it, labelled so) and, when
some rows are outside it, the average of all rows. An average of one row would repeat it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rerank_eval.results.manifest import DatasetRecord, Suite


def row_members(records: Iterable[DatasetRecord]) -> list[tuple[str, list[str]]]:
    """(row name, member dataset keys) of manifest dataset records, in first-seen order."""
    rows: dict[str, list[str]] = {}
    for record in records:
        members = rows.setdefault(record.row_name, [])
        if record.key not in members:
            members.append(record.key)
    return list(rows.items())


def is_group(name: str, members: list[str]) -> bool:
    return len(members) > 1 or members[0] != name


@dataclass(frozen=True)
class AverageRow:
    label: str
    names: list[str]  # the averaged rows
    complete: bool  # the suite's whole headline average (the one published figures report)


def average_rows(names: list[str], in_average: set[str], suite: Suite) -> list[AverageRow]:
    """The averages of rows `names` (in order), `in_average` being the rows of the headline one."""
    headline = [name for name in names if name in in_average]
    averages = []
    if len(headline) > 1:
        expected = list(suite.average_rows)
        complete = sorted(headline) == sorted(expected)
        label = suite.average_label
        if not complete:
            label = f"{label} subset ({len(headline)} of {len(expected)})"
        averages.append(AverageRow(label, headline, complete))
    if len(headline) < len(names) and len(names) > 1:
        averages.append(AverageRow(f"Average, all {len(names)} rows", names, False))
    return averages
