"""What every first-stage kind implements, and the records they leave in the manifest.

A first stage turns a dataset's queries into a run (query id -> {doc id: score}). Each kind (a
published run on the Hub, the built-in BM25, dense retrieval, ...) is one module of this package
that declares its name and its settings and registers itself (see `registry`); the config reader,
`fetch` and the runner only ever go through this interface, so adding a kind touches this package
and `benchmarks.yaml` only.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rerank_eval.errors import ParameterError, UserError, did_you_mean
from rerank_eval.runfiles import typed_number
from rerank_eval.typed import KIND_NAMES, is_kind, is_positive_integer

if TYPE_CHECKING:
    from rerank_eval.config.schema import DatasetSpec, FirstStageSpec
    from rerank_eval.datasets.ir_dataset import IrDataset
    from rerank_eval.runfiles import Run


@dataclass(frozen=True)
class Setting:
    """One setting a kind accepts in `benchmarks.yaml`: its type, default, and whether it is needed."""

    kind: type
    default: Any = None
    required: bool = False
    choices: tuple[Any, ...] = ()
    #: (lowest, highest) accepted for a number: a config may come from someone else
    bounds: tuple[float, float] | None = None
    #: whether it changes only how the run is computed (batching, precision, kernels), not which
    #: first stage it is: set on the command line, it leaves the entry's name and published figure
    execution_only: bool = False

    def check(self, where: str, value: Any) -> Any:
        blank = isinstance(value, str) and not value.strip()  # (an empty encoder: the working folder)
        if self.required and (value is None or blank):
            raise UserError(f"{where}: is required" + ("" if value is None else f", got {value!r}"))
        if value is None:
            return self.default
        if self.kind is float and isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{where}: must be a finite number, got {value!r}")
        if not is_kind(value, self.kind):
            raise UserError(f"{where}: expected {KIND_NAMES[self.kind]}, got {value!r}")
        if self.kind is float:
            value = float(value)
        if self.kind is int and not is_positive_integer(value):
            raise UserError(f"{where}: must be a positive integer, got {value!r}")
        if self.bounds and not self.bounds[0] <= value <= self.bounds[1]:
            raise UserError(
                f"{where}: must be between {self.bounds[0]:,} and {self.bounds[1]:,}, got {value!r}"
            )
        if self.choices and value not in self.choices:
            raise UserError(f"{where}: expected one of {', '.join(map(str, self.choices))}, got {value!r}")
        return value

    def parse(self, where: str, text: str) -> Any:
        """The value `text` gives this setting on the command line (`--first-stage-set NAME=TEXT`),
        read as the setting's type and checked; a mapping cannot be given there."""
        if self.kind is str:
            return self.check(where, text)
        if self.kind is dict:
            raise UserError(f"{where}: is a mapping; set it in a first_stages entry of a config file")
        if self.kind is bool:
            value = {"true": True, "false": False}.get(text.strip().lower())
            if value is None:
                raise UserError(f"{where}: expected true or false, got {text!r}")
            return self.check(where, value)
        number = typed_number(text)
        if number is None or (self.kind is int and not isinstance(number, int)):
            raise UserError(f"{where}: expected {KIND_NAMES[self.kind]}, got {text!r}"[:200])
        return self.check(where, self.kind(number))


#: the BM25 parameters every BM25 kind takes, at Pyserini's defaults (those of the published runs)
BM25_SETTINGS: dict[str, Setting] = {
    "k1": Setting(float, 0.9, bounds=(0.0, 100.0)),
    "b": Setting(float, 0.4, bounds=(0.0, 1.0)),
}


def unknown_setting_hint(name: str, schema: dict[str, Setting]) -> str:
    """What follows the name of a setting a kind does not have: the closest one, and all it has."""
    return f"{did_you_mean(name, schema)}; accepted: {', '.join(sorted(schema)) or 'none'}"


def check_settings(where: str, schema: dict[str, Setting], raw: dict[str, Any]) -> dict[str, Any]:
    """Every declared setting with its value or default; an unknown name is refused with a hint."""
    for name in raw:
        if name not in schema:
            raise UserError(f"{where}: unknown setting {name!r}{unknown_setting_hint(name, schema)}")
    return {name: setting.check(f"{where}.{name}", raw.get(name)) for name, setting in schema.items()}


@dataclass
class FirstStageRecord:
    """What produced a dataset's candidates; stored in the manifest."""

    kind: str  # "run-file", or a registered kind ("hub", "bm25s", "lucene", "dense")
    label: str
    #: the first_stages entry (or KIND:ARGUMENT) it came from; None for a user's run file
    name: str | None = None
    path: str | None = None
    sha256: str | None = None
    repo: str | None = None
    revision: str | None = None  # the Hub commit the run file (or encoder) was taken from
    settings: dict[str, object] | None = None
    reference_name: str | None = None
    reference_ndcg10: float | None = None
    reference_r100: float | None = None
    #: the published figure of the dataset's group (CQADupStack's), where only the group has one
    group_reference_ndcg10: float | None = None
    duplicate_lines: int = 0
    #: the configured first stage this one stands in for (its kind could not run here)
    fallback_from: str | None = None
    #: how the run was computed (timings per rank, passages encoded); never part of a cache key
    execution: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def reference_fields(spec: DatasetSpec, name: str) -> dict[str, object]:
    """A FirstStageRecord's published figures named `name`: the dataset's and its group's."""
    return {
        "reference_name": name,
        "reference_ndcg10": spec.reference.get(name),
        "reference_r100": spec.reference_r100.get(name),
        "group_reference_ndcg10": spec.group_reference.get(name),
    }


@dataclass(frozen=True)
class RunLocation:
    """Where the user said a dataset's run file is (`--run KEY=PATH` or a folder and pattern)."""

    overrides: dict[str, Path] = field(default_factory=dict)
    folder: Path | None = None
    pattern: str = "{key}.trec"
    # The published first stage the user's files reproduce (`--run-reference`), e.g. pyserini-bm25:
    # its per-dataset nDCG@10 from the config is then checked against the files' own.
    reference: str | None = None

    def reference_fields(self, spec: DatasetSpec) -> dict[str, object]:
        """The published figures, of the dataset and of its group, the files are checked against."""
        if self.reference is None:
            return {}
        if self.reference not in spec.published_sources:
            known = ", ".join(sorted(spec.published_sources)) or "none"
            raise ParameterError(
                "runs.reference",
                f"{self.reference}: the config has no such published figure for {spec.key} (it has: {known})",
            )
        return reference_fields(spec, self.reference)

    def path_for(self, spec: DatasetSpec) -> Path | None:
        if spec.key in self.overrides:
            return self.overrides[spec.key]
        if self.folder is not None:
            name = self.pattern.format(key=spec.key, name=spec.run_name or spec.key)
            return self.folder / name
        return None


@dataclass
class FirstStageRequest:
    """What a kind is asked for: one dataset's run to `depth`, for these queries."""

    spec: DatasetSpec
    source: FirstStageSpec | None  # None where the user's run file is the first stage
    dataset: IrDataset
    queries: dict[str, str]
    depth: int

    def reference_fields(self) -> dict[str, object]:
        """The published figure of this first stage for this dataset, and for the dataset's group,
        when the config has one (the first of the first stage's `reference` names it has)."""
        names = self.source.reference if self.source else ()
        spec = self.spec
        # the first name with an nDCG@10 figure (the table's main check), else with any figure
        with_ndcg = (n for n in names if n in spec.reference or n in spec.group_reference)
        name = next(with_ndcg, next((n for n in names if n in spec.published_sources), None))
        return {} if name is None else reference_fields(spec, name)


class FirstStageKind(ABC):
    """One way of producing first-stage runs; subclasses register an instance with `register`."""

    #: the `kind:` value in benchmarks.yaml
    name: ClassVar[str]
    #: settings a first_stages entry of this kind accepts (beyond kind, label, reference)
    settings: ClassVar[dict[str, Setting]] = {}
    #: whether `fetch` downloads anything beyond the dataset (a run file, an encoder)
    downloads: ClassVar[bool] = True
    #: whether what `fetch` builds is keyed by the device and dtype that made it (a corpus's
    #: embeddings), so that a machine without that device should download only (`fetch --no-encode`)
    device_keyed: ClassVar[bool] = False

    def validate(self, where: str, settings: dict[str, Any]) -> dict[str, Any]:
        """Settings from the config, checked and completed with defaults (errors name `where`)."""
        return check_settings(where, self.settings, settings)

    def changed(self, settings: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        """An entry's `settings` with `changes` made (`--first-stage-set`), before they are checked;
        a kind whose settings hang together says here what a change takes with it."""
        return {**settings, **changes}

    #: what `available` looks for, said where it is missing
    requirement: ClassVar[str] = ""

    def available(self) -> bool:
        """Whether this kind can run here (an optional extra may be missing)."""
        return True

    def preflight(self, spec: DatasetSpec, source: FirstStageSpec) -> None:  # noqa: B027 (a hook)
        """Refuse, before any work, what cannot run here (a missing extra, an unusable runtime);
        kinds that always run keep this default, which refuses nothing."""

    def fetch_model(self, source: FirstStageSpec) -> str | None:
        """Download the model this first stage runs (an encoder) and say where it is; `fetch` asks
        before any dataset, so a mistyped or unreachable one is said before hours of downloads.
        Kinds that run no model keep this default (None)."""
        return None

    def from_argument(self, argument: str, first_stages: dict[str, FirstStageSpec]) -> FirstStageSpec:
        """The source `--first-stage KIND:ARGUMENT` names; kinds without such a form refuse it."""
        raise UserError(f"first stage kind {self.name} takes no argument (got {self.name}:{argument})")

    @abstractmethod
    def fetch(self, request: FirstStageRequest, build: bool = True) -> None:
        """Fill every cache `obtain` needs (downloads, indexes), so it can later run offline.

        With `build=False` (rank 0 alone, before a multi-process run) only what one process must
        do first: downloads and single-process builds, not work the ranks share."""

    @abstractmethod
    def obtain(self, request: FirstStageRequest) -> tuple[Run, FirstStageRecord]:
        """The dataset's run (scores as the first stage computed them) and its manifest record."""
