"""Which rows a result table has, decided once for the report of one result and for a comparison.

Datasets come in suite order; a group's members (CQADupStack's forums) fold into one row at the
place of the first; then the suite's headline average (or a subset of it, labelled so) and, when
some rows are outside it, the average of all rows. An average of one row would repeat it. A group
row holding only some of its members (two of CQADupStack's twelve forums) is another figure than
the group's, so an average over it is no longer the suite's headline one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from rerank_eval.results.manifest import DatasetRecord, Suite


def query_mean(values: Iterable[float]) -> float:
    """The mean of a row's per-query values, its sum correctly rounded (`math.fsum`): the same
    values listed in another order give the same bits, so equal results compare equal (a summing
    order's last-bit noise once showed as a significant difference on an average row)."""
    values = list(values)
    return math.fsum(values) / len(values)


def row_members(records: Iterable[DatasetRecord]) -> list[tuple[str, list[str]]]:
    """(row name, member dataset keys) of manifest dataset records, in first-seen order."""
    rows: dict[str, list[str]] = {}
    for record in records:
        members = rows.setdefault(record.row_name, [])
        if record.key not in members:
            members.append(record.key)
    return list(rows.items())


def merged_row_members(
    runs: list[list[DatasetRecord]], suite_order: list[str]
) -> list[tuple[str, list[str]]]:
    """`row_members` of several results' records in the suite's order (`suite_order`, dataset keys),
    whichever result holds a dataset; datasets it does not list come after, where their results
    put them (one only a later result has after its predecessor there)."""
    merged: list[str] = []
    records: dict[str, DatasetRecord] = {}
    for run in runs:
        position = -1
        for record in run:
            if record.key in records:
                position = merged.index(record.key)
                continue
            position += 1
            merged.insert(position, record.key)
            records[record.key] = record
    place = {key: index for index, key in enumerate(suite_order)}
    ordered = sorted(merged, key=lambda key: place.get(key, len(place)))  # stable: merged order after
    return row_members(records[key] for key in ordered)


def is_group(name: str, members: list[str]) -> bool:
    return len(members) > 1 or members[0] != name


def missing_members(name: str, members: list[str], groups: dict[str, list[str]]) -> list[str]:
    """The members of group `name` (`groups`: a suite's) that a row of `members` lacks (none where
    the results do not record their suite's groups, as those written before them did not)."""
    return [member for member in groups.get(name, []) if member not in members]


def in_part(name: str, members: list[str], missing: list[str]) -> str:
    """The note on a group row holding only some of its members."""
    whole = len(members) + len(missing)
    return (
        f"{name}: mean over {len(members)} of its {whole} members ({', '.join(members)}), "
        "not the whole group's figure"
    )


@dataclass(frozen=True)
class AverageRow:
    label: str
    names: list[str]  # the averaged rows
    complete: bool  # the suite's whole headline average (the one published figures report)


def average_rows(
    names: list[str], in_average: set[str], suite: Suite, partial: frozenset[str] = frozenset()
) -> list[AverageRow]:
    """The averages of rows `names` (in order), `in_average` being the rows of the headline one and
    `partial` the group rows holding only some of their members."""
    headline = [name for name in names if name in in_average]
    averages = []
    if len(headline) > 1:
        expected = list(suite.average_rows)
        in_part = [name for name in headline if name in partial]
        complete = sorted(headline) == sorted(expected) and not in_part
        label = suite.average_label
        if not complete:
            part = f", {len(in_part)} in part" if in_part else ""
            label = f"{label} subset ({len(headline)} of {len(expected)}{part})"
        averages.append(AverageRow(label, headline, complete))
    if len(headline) < len(names) and len(names) > 1:
        averages.append(AverageRow(f"Average, all {len(names)} rows", names, False))
    return averages
