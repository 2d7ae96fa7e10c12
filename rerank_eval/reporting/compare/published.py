"""Published figures (`rerank_eval/published/*.json`), shown beside runs: marked, never tested."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from rerank_eval.config.reader import packaged_config
from rerank_eval.errors import UserError, did_you_mean
from rerank_eval.results.manifest import DatasetRecord

PUBLISHED_DIR = Path(__file__).resolve().parents[2] / "published"


@dataclass
class PublishedColumn:
    label: str
    source: str
    first_stage: str
    rows: dict[str, float]
    averages: dict[str, float]
    #: the first_stages entry that reproduces its candidates (e.g. jina-embeddings-v3), when known
    first_stage_name: str | None = None
    top_k: int | None = None  # how many of the first stage's results it reranked, when known
    notes: str = ""  # what else the source says of its figures (another version's average)


def published_names() -> list[str]:
    return sorted(p.stem for p in PUBLISHED_DIR.glob("*.json"))


def load_published(name: str, metric: str) -> PublishedColumn:
    """The packaged figures named `name`: a name from the list, never a path (`../x` or `/x` would
    reach any .json file)."""
    known = published_names()
    if name not in known:
        raise UserError(
            f"no published results named {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}"
        )
    data = json.loads((PUBLISHED_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return PublishedColumn(
        label=f"{data['name']} (published)",
        source=data["source"],
        first_stage=data["first_stage"],
        rows=dict(data["rows"].get(metric, {})),
        averages=dict(data["averages"].get(metric, {})),
        first_stage_name=data.get("first_stage_name"),
        top_k=data.get("top_k"),
        notes=data.get("notes", ""),
    )


def row_figure(column: PublishedColumn, name: str, members: list[str]) -> tuple[float | None, str | None]:
    """A published column's figure for row `name` (of `members`), and the note that says what it is
    or why there is none: its own figure; for a row holding only some of a packaged group's members
    (whatever the runs' own suite calls that group), the mean of those members' figures, never the
    whole group's."""
    if name not in column.rows and not all(member in column.rows for member in members):
        return None, None
    if not [member for member in packaged_groups().get(name, []) if member not in members]:
        return column.rows.get(name), None
    if all(member in column.rows for member in members):
        mean = sum(column.rows[member] for member in members) / len(members)
        return mean, f"{name}: {column.label} is the mean of its figures for those members"
    return None, f"{name}: {column.label} has only the whole group's figure, not shown"


def other_version(members: list[str], ids: dict[str, set[str | None]]) -> str | None:
    """How the runs read a row's members where that is not the data published figures are of (the
    packaged suites' ir_datasets ids): "beir/scifact/train", "local files"; None where it is."""
    packaged = packaged_dataset_ids()
    if all(ids[member] <= packaged.get(member, set()) for member in members):
        return None
    return ", ".join(
        sorted({"local files" if id_ is None else id_ for member in members for id_ in ids[member]})
    )


def first_stage_note(
    column: PublishedColumn, records: list[DatasetRecord], depths: list[int]
) -> tuple[bool, str]:
    """(whether the runs share the column's first stage, what to say of it). The same first stage
    is the packaged entry of that name (its kind: not a user's entry reusing the name) at the
    published depth; nothing is said of a column that names no first stage."""
    name = column.first_stage_name
    if name is None:
        return False, ""
    if {(record.first_stage.name, record.first_stage.kind) for record in records} != {
        (name, packaged_kind(name))
    }:
        return (
            False,
            f"{column.label} reranked {name}'s candidates; the runs did not ({same_candidates_advice(name)})",
        )
    if column.top_k is not None and depths != [column.top_k]:
        ours = ", ".join(f"top-{k}" for k in depths)
        return False, (
            f"{column.label} reranked the top-{column.top_k} of {name}; the runs reranked its {ours} "
            f"(rerun with --top-k {column.top_k} to compare on the same candidates)"
        )
    return True, f"{column.label} and the runs share the first stage {name}"


def is_packaged_headline(label: str, rows: list[str]) -> bool:
    """Whether `rows` are the headline rows a packaged suite averages under `label` (BEIR-13's 13):
    only then is a published average of that name the same figure (a suite of your own may reuse
    the label over other rows)."""
    return any(
        suite.average_label == label and set(rows) == suite.average_rows()
        for suite in packaged_config().suites.values()
    )


@functools.cache
def packaged_groups() -> dict[str, list[str]]:
    """Each group of the packaged suites with its members: the groups published figures are of."""
    return {
        name: members
        for suite in packaged_config().suites.values()
        for name, members in suite.groups().items()
    }


@functools.cache
def packaged_dataset_ids() -> dict[str, set[str | None]]:
    """Each dataset key of the packaged suites with its ir_datasets ids: the data published figures
    are of."""
    ids: dict[str, set[str | None]] = {}
    for suite in packaged_config().suites.values():
        for dataset in suite.datasets:
            ids.setdefault(dataset.key, set()).add(dataset.ir_datasets_id)
    return ids


def packaged_kind(first_stage: str) -> str | None:
    """The kind of the packaged first_stages entry `first_stage` (None where none is packaged)."""
    entry = packaged_config().first_stages.get(first_stage)
    return None if entry is None else entry.kind


def same_candidates_advice(first_stage: str) -> str:
    """How to rerun on a published column's candidates, where a packaged first stage makes them."""
    if first_stage in packaged_config().first_stages:
        return f"rerun with --first-stage {first_stage} to compare on the same candidates"
    return f"no packaged first stage reproduces {first_stage}; configure one to compare the same candidates"
