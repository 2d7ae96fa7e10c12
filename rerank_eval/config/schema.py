"""What a benchmarks file declares: suites, datasets, first-stage sources and model presets.

Every field that moves a number (first stage, self-match policy, top-k, metrics) is declared here
and read in `reader.py` and nowhere else, so the manifest can record exactly what was used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rerank_eval.errors import ParameterError, UserError, did_you_mean, term

DEFAULT_CONFIG = Path(__file__).with_name("benchmarks.yaml")
#: the deepest candidate list evaluated (and so the largest top_k); BEIR's deepest runs are 1,000
MAX_TOP_K = 10_000


def top_k_problem(top_k: int) -> str | None:
    """Why `top_k` cannot be a run's depth (None where it can)."""
    return None if 1 <= top_k <= MAX_TOP_K else f"must be between 1 and {MAX_TOP_K:,}, got {top_k}"


# The keys each kind of entry accepts (a first stage's own settings are checked by its kind).
DEFAULTS_KEYS = ("top_k", "metrics", "model")
SUITE_KEYS = ("average_label", "defaults", "datasets", "groups")
#: what a suite's `groups` entry (a row folding datasets, e.g. cqadupstack) may state
GROUP_KEYS = ("reference",)
#: what a suite's `defaults` may give every dataset entry that does not state it
SUITE_DEFAULT_KEYS = ("language", "first_stage", "drop_self_matches", "in_average")
DATASET_KEYS = ("key", "id", "path", "split", "corpus", "queries", "qrels", "language", "first_stage",
                "drop_self_matches", "in_average", "group", "run_name", "run_file", "reference",
                "reference_r100", "instructions")  # fmt: skip
#: a local dataset's files: named one by one, or a BEIR-format folder (`path`, `split`)
LOCAL_FILE_KEYS = ("corpus", "queries", "qrels")
MODEL_KEYS = (
    "family",
    "model",
    "settings",
    "description",
    "trust_remote_code",
    "package",
    "size",
    "gpu_memory",
    "unverified",
)


@dataclass(frozen=True)
class FirstStageSpec:
    """Where first-stage candidates come from when the user supplies no run file.

    `kind` names a registered first-stage kind (rerank_eval/first_stage); `settings` are that
    kind's own, checked by it and completed with its defaults.
    """

    name: str
    kind: str
    label: str
    #: keys of DatasetSpec.reference holding the published figure, the first a dataset has
    reference: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    #: the first stage used, and said to be used, where this one's kind cannot run here (an
    #: optional extra not installed)
    fallback: str | None = None


@dataclass(frozen=True)
class LocalFiles:
    """A dataset in local files (absolute paths): a corpus (JSON lines or TSV), queries (JSON
    lines or TSV) and qrels (TREC, or BEIR's TSV with its header)."""

    corpus: str
    queries: str
    qrels: str
    folder: str | None = None  # the BEIR-format folder the files are in, when one was named


@dataclass(frozen=True)
class DatasetSpec:
    """One row of a suite: an ir_datasets id (or local files) plus the protocol choices that
    change its numbers."""

    key: str
    ir_datasets_id: str | None  # None for a dataset in local files
    language: str
    first_stage: str | None  # None: the command line names it (`--first-stage`, a run file)
    drop_self_matches: bool
    in_average: bool
    group: str | None = None
    run_name: str | None = None
    run_file: str | None = None
    #: published first-stage nDCG@10 per source (a key of FirstStageSpec.reference)
    reference: dict[str, float] = field(default_factory=dict)
    #: published first-stage R@100 per source, checked where the run keeps at least the top 100
    reference_r100: dict[str, float] = field(default_factory=dict)
    #: published first-stage nDCG@10 of the dataset's group as a whole (from the suite's `groups`)
    group_reference: dict[str, float] = field(default_factory=dict)
    #: per-dataset instructions for models that take one, by preset name or family
    instructions: dict[str, str] = field(default_factory=dict)
    local: LocalFiles | None = None

    @property
    def published_sources(self) -> set[str]:
        """The sources with a published first-stage figure for this dataset or its group."""
        return {*self.reference, *self.reference_r100, *self.group_reference}

    @property
    def origin(self) -> str:
        """Where the dataset comes from, for messages: its ir_datasets id or its files' folder."""
        if self.local is None:
            return str(self.ir_datasets_id)
        return f"local files in {Path(self.local.corpus).parent}"

    @property
    def row(self) -> str:
        """The table row this dataset contributes to (its group, or itself)."""
        return self.group or self.key


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    average_label: str
    datasets: tuple[DatasetSpec, ...]

    def groups(self) -> dict[str, list[str]]:
        """Each group (a row folding datasets, e.g. cqadupstack) with its members, in suite order."""
        groups: dict[str, list[str]] = {}
        for dataset in self.datasets:
            if dataset.group:
                groups.setdefault(dataset.group, []).append(dataset.key)
        return groups

    def average_rows(self) -> set[str]:
        """The rows of the headline average (BEIR-13's thirteen)."""
        return {dataset.row for dataset in self.datasets if dataset.in_average}

    def select(self, names: list[str] | None) -> list[DatasetSpec]:
        """Datasets named by key or group, in suite order; all of them when `names` is empty. The
        average's label (`BEIR-13`, or `beir-13`) names the datasets in the average: a published
        average's protocol without the suite's other datasets (BEIR's msmarco and CQADupStack
        forums hold a third of its passages)."""
        if not names:
            return list(self.datasets)
        labels = {self.average_label, self.average_label.lower()}
        known = {d.key for d in self.datasets} | {d.group for d in self.datasets if d.group}
        unknown = [n for n in names if n not in known | labels]
        if unknown:
            hint = did_you_mean(unknown[0], known | {self.average_label}, cutoff=0.75)
            raise UserError(
                f"unknown dataset {unknown[0]!r} in suite {self.name!r}{hint}; "
                f"known: {', '.join(sorted(known))}, or {self.average_label} for those in its average"
            )
        wanted = set(names)
        averaged = bool(wanted & labels)
        chosen = [
            d for d in self.datasets if d.key in wanted or d.group in wanted or (averaged and d.in_average)
        ]
        if not chosen:  # only a label can select nothing: a suite with no dataset in its average
            raise UserError(f"suite {self.name!r} has no dataset in its average ({self.average_label})")
        return [self._without_partial_group_reference(d, chosen) for d in chosen]

    def _without_partial_group_reference(
        self, dataset: DatasetSpec, chosen: list[DatasetSpec]
    ) -> DatasetSpec:
        """A group's published figure holds for the whole group: a run of some of its members is
        not checked against it."""
        if not dataset.group_reference:
            return dataset
        members = {d.key for d in self.datasets if d.group == dataset.group}
        if members <= {d.key for d in chosen}:
            return dataset
        return replace(dataset, group_reference={})


@dataclass(frozen=True)
class ModelPreset:
    name: str
    family: str
    model: str | None  # a Hub id (or a local directory)
    settings: dict[str, Any]
    description: str = ""
    trust_remote_code: bool = False  # the model needs code from its Hub repository
    package: str | None = None  # a Python package that ships the model files (used when installed)
    size: str = ""  # parameters, for `rerank-eval models`
    gpu_memory: str = ""  # rough need at the preset's settings, for `rerank-eval models`
    #: what about the preset's procedure is not settled by its own published code (shown by
    #: `rerank-eval models`); empty where it is
    unverified: str = ""


@dataclass(frozen=True)
class ConfigFile:
    """One benchmarks file a configuration was read from, with its content hash."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class BenchmarkConfig:
    #: the file given last (the user's `--config`, else the packaged one)
    path: Path
    top_k: int
    metrics: tuple[str, ...]
    default_model: str
    first_stages: dict[str, FirstStageSpec]
    suites: dict[str, SuiteSpec]
    models: dict[str, ModelPreset]
    #: that file's content hash: a result records it with the entries it used
    sha256: str = ""
    #: every file read, the packaged one first, each later one merged over the earlier ones
    files: tuple[ConfigFile, ...] = ()

    def suite(self, name: str) -> SuiteSpec:
        if name not in self.suites:
            files = " + ".join(str(f.path) for f in self.files) or str(self.path)
            raise UserError(
                f"unknown suite {name!r} in {files}{did_you_mean(name, self.suites, cutoff=0.75)}; "
                f"known: {', '.join(sorted(self.suites))}"
            )
        return self.suites[name]

    def first_stage(self, name: str, settings: Mapping[str, Any] | None = None) -> FirstStageSpec:
        """An entry of first_stages, or a `KIND:ARGUMENT` form such as `dense:ENCODER`, with
        `settings` replaced (`--first-stage-set`; see first_stage.with_settings)."""
        from rerank_eval.first_stage import resolve, with_settings

        source = resolve(name, self.first_stages)
        return with_settings(source, settings) if settings else source

    def command_line_first_stage(
        self, name: str | None, settings: Mapping[str, Any] | None = None
    ) -> FirstStageSpec | None:
        """The first stage the command line names, with `settings` replaced; None where it names
        none (then there are no settings to replace)."""
        if settings and name is None:
            raise ParameterError(
                "first_stage_settings",
                "changes the settings of the first stage {first_stage} names; give one",
                mentions=("first_stage",),
            )
        return None if name is None else self.first_stage(name, settings)

    def first_stage_for(
        self, spec: DatasetSpec, override: str | None, settings: Mapping[str, Any] | None = None
    ) -> FirstStageSpec:
        """The first stage a dataset uses: the command line's (with `settings` replaced), else its
        entry's (or its suite's default); a dataset with neither cannot be run."""
        chosen = self.command_line_first_stage(override, settings)
        if chosen is not None:
            return chosen
        if spec.first_stage is None:
            raise UserError(
                f"dataset {spec.key} names no first stage: give one with {term('first_stage')} NAME or a "
                f"run file ({term('runs.overrides')} {spec.key}=PATH), or set first_stage in its entry or "
                f"its suite's defaults",
                {"first_stage": "first_stage=", "runs.overrides": "runs.overrides"},
            )
        return self._runnable(self.first_stage(spec.first_stage))

    def _runnable(self, source: FirstStageSpec) -> FirstStageSpec:
        """`source`, or the first of its fallbacks whose kind can run here (a dataset's configured
        first stage only: one named on the command line is used or refused, never replaced); the
        reader refuses a chain that loops, and the last entry of a chain is used or refused."""
        from rerank_eval.first_stage import kind

        while source.fallback is not None and not kind(source.kind).available():
            source = self.first_stage(source.fallback)
        return source
