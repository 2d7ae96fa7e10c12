"""The manifest as reports and comparisons read it: typed records with a format version.

A result folder may be damaged, edited or foreign, so what the readers use is declared here once,
as frozen dataclasses, and `read_manifest` checks a manifest against them: a missing field, a
value of the wrong type (a boolean is not a number, a number must be finite) or a format newer
than this version knows is reported in one line naming the field. Fields with a default may be
absent (folders written by earlier versions lack some). The whole file stays available as `raw`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from rerank_eval.errors import UserError
from rerank_eval.textlines import CONTROL_CHARACTERS
from rerank_eval.typed import KIND_NAMES, is_kind

#: the newest format this version reads and writes: 2 adds datasets in local files
#: (`ir_datasets_id` null, `local_files`); results without them are still written as format 1
MANIFEST_FORMAT = 2


def format_for(datasets: list[dict[str, Any]]) -> int:
    """The format a manifest of these dataset records is written in: 1 where format 2's one
    addition (datasets in local files) is unused, so that older versions read it."""
    return MANIFEST_FORMAT if any("local_files" in record for record in datasets) else 1


@dataclass(frozen=True)
class Protocol:
    top_k: int
    metrics: list[str]
    candidate_order: str
    measures: list[str]  # the metrics plus those every table shows, as per_query.csv names them


@dataclass(frozen=True)
class Suite:
    name: str
    average_label: str
    average_rows: list[str] = field(default_factory=list)
    #: each group's members in the suite (CQADupStack's twelve forums), so that a row holding only
    #: some of them is told from the whole group's; older results lack it
    groups: dict[str, list[str]] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)  # every dataset of the suite, in its order


@dataclass(frozen=True)
class Model:
    name: str
    #: its place (1, 2, ...) among the `--model`s of a run of several; None for a run of one, and
    #: in results written before it was recorded
    position: int | None = None
    family: str | None = None  # (None in results written before it was read here)

    @property
    def keeps_first_stage_order(self) -> bool:
        """Whether it is the pass-through of the bm25 and first-stage presets, which scores nothing."""
        return self.family == "first-stage-order"


@dataclass(frozen=True)
class FirstStageUsed:
    label: str
    kind: str
    name: str | None = None  # the first_stages entry, when one was used (not a user's run file)
    sha256: str | None = None  # of the run file the candidates were cut from
    settings: Any = None
    reference_name: str | None = None
    reference_ndcg10: float | None = None  # the published nDCG@10 the first stage is checked against
    reference_r100: float | None = None  # the published R@100 the first stage is checked against
    group_reference_ndcg10: float | None = None  # the published nDCG@10 of the dataset's group


@dataclass(frozen=True)
class Coverage:
    judged_queries: int
    queries_without_run: int


@dataclass(frozen=True)
class Timings:
    rerank_seconds: float
    #: queries whose scores came from the score journal (an earlier or interrupted run), untimed
    resumed_queries: int = 0


@dataclass(frozen=True)
class DatasetRecord:
    key: str
    ir_datasets_id: str | None  # None for a dataset in local files
    drop_self_matches: bool
    in_average: bool
    first_stage: FirstStageUsed
    coverage: Coverage
    timings: Timings
    row: str | None = None  # the row it is folded into (CQADupStack's forums), else its own key
    local_files: dict | None = None  # a local dataset's files: role -> {path, sha256}
    candidates_sha256: str | None = None  # what was reranked (Candidates.sha256); older results lack it

    @property
    def row_name(self) -> str:
        return self.row or self.key


@dataclass(frozen=True)
class Manifest:
    protocol: Protocol
    suite: Suite
    model: Model
    datasets: list[DatasetRecord]
    format: int = MANIFEST_FORMAT
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def first_stage_labels(self) -> list[str]:
        return sorted({record.first_stage.label for record in self.datasets})


def _read(kind: Any, value: Any, where: str) -> Any:
    """`value` as `kind` (a type hint), or a UserError naming `where`."""
    if kind is Any:
        return value
    options = typing.get_args(kind)
    if type(None) in options:
        if value is None:
            return None
        kind = next(option for option in options if option is not type(None))
    if dataclasses.is_dataclass(kind):
        return _record(kind, value, where)
    if typing.get_origin(kind) is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where} is not a mapping")
        _, item = typing.get_args(kind)
        keys = [_read(str, key, f"{where} key") for key in value]
        return {key: _read(item, value[key], f"{where}.{key}") for key in keys}
    if typing.get_origin(kind) is list:
        if not isinstance(value, list):
            raise UserError(f"{where} is not a list")
        (item,) = typing.get_args(kind)
        return [_read(item, element, f"{where}[{index}]") for index, element in enumerate(value)]
    if isinstance(value, str) and CONTROL_CHARACTERS.search(value):  # printed to terminals and into tables
        raise UserError(f"{where} holds a control character: {value!r}"[:200])
    if not is_kind(value, kind):
        raise UserError(f"{where} should be {KIND_NAMES.get(kind, 'a value')}, not {value!r}"[:200])
    return value


def _record(kind: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise UserError(f"{where or 'the top level'} is not a mapping")
    hints = typing.get_type_hints(kind)
    values = {}
    for declared in dataclasses.fields(kind):
        if declared.name == "raw":
            continue
        path = f"{where}.{declared.name}" if where else declared.name
        if declared.name not in value:
            if declared.default is dataclasses.MISSING and declared.default_factory is dataclasses.MISSING:
                raise UserError(f"{path} is missing")
            continue
        values[declared.name] = _read(hints[declared.name], value[declared.name], path)
    return kind(**values)


def read_manifest(data: Any, source: str) -> Manifest:
    """A manifest checked against the records above; `source` names it in errors."""
    parts = ("protocol", "suite", "model", "datasets")
    missing = [part for part in parts if not isinstance(data, dict) or part not in data]
    if missing:
        raise UserError(f"{source} is not a rerank-eval manifest (no {', '.join(missing)})")
    try:
        manifest = _record(Manifest, data, "")
    except UserError as problem:
        raise UserError(f"{source} is damaged: {problem}") from None
    if manifest.format < 1:  # (no version wrote it)
        raise UserError(f"{source} is damaged: format {manifest.format} is none of 1 to {MANIFEST_FORMAT}")
    if manifest.format > MANIFEST_FORMAT:
        raise UserError(
            f"{source} has manifest format {manifest.format}; this rerank-eval reads up to "
            f"{MANIFEST_FORMAT} (a newer version wrote it)"
        )
    return dataclasses.replace(manifest, raw=data)


def command_words(command: Any) -> list[str] | None:
    """What identifies a recorded command line: its words without the program's path (`rerank-eval`
    or `python -m rerank_eval`) and without `--fresh` (a resume command leaves it out); None for
    what is no command line."""
    if not isinstance(command, (list, tuple)):
        return None
    return [word for word in command[1:] if word != "--fresh"]


def lasting_record(manifest: Any) -> Any:
    """A manifest (as JSON) without what differs between an uninterrupted run and the same run
    resumed or redone from its journal (docs/operations.md): its times, each dataset's timings, how
    its first stage was obtained (`execution`), and of its command line the program's path and a
    `--fresh` (the resume command leaves it out)."""

    def without(record: Any, *keys: str) -> Any:
        return {k: v for k, v in record.items() if k not in keys} if isinstance(record, dict) else record

    kept = without(manifest, "started", "finished", "seconds")
    if isinstance(kept, dict) and "command" in kept:
        kept["command"] = command_words(kept["command"])
    if isinstance(kept, dict) and isinstance(kept.get("datasets"), list):
        kept["datasets"] = [
            {**record, "first_stage": without(record.get("first_stage"), "execution")}
            if isinstance(record, dict)
            else record
            for record in (without(record, "timings") for record in kept["datasets"])
        ]
    return kept
