"""Reading the benchmarks files into one `BenchmarkConfig`.

The packaged file is always read; a user's `--config` is layered on top of it (layers.py), so a
user file holds only its own suites, datasets, first stages and presets. A file may come from
someone else, so it is read strictly (bounded_yaml; unknown keys, non-boolean flags, out-of-range
numbers and names that cannot be file names are refused), each refusal naming the file and the
entry.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

from rerank_eval.config.layers import MergedConfig, merge_layers, read_layer
from rerank_eval.config.schema import (
    DATASET_KEYS,
    DEFAULT_CONFIG,
    DEFAULTS_KEYS,
    GROUP_KEYS,
    LOCAL_FILE_KEYS,
    MODEL_KEYS,
    SUITE_DEFAULT_KEYS,
    SUITE_KEYS,
    BenchmarkConfig,
    ConfigFile,
    DatasetSpec,
    FirstStageSpec,
    LocalFiles,
    ModelPreset,
    SuiteSpec,
)
from rerank_eval.config.values import ValueChecks
from rerank_eval.errors import UserError, closest


@functools.cache
def packaged_config() -> BenchmarkConfig:
    """The packaged benchmarks file alone, read once: what published figures and old results are
    read against (a comparison asks it for each row and column)."""
    return load_config()


def load_config(path: Path | None = None) -> BenchmarkConfig:
    """The packaged benchmarks file, with the user's file at `path` (if any) merged on top;
    errors name the file and the offending entry."""
    layers = [read_layer(DEFAULT_CONFIG)]
    try:
        packaged = path is not None and Path(path).resolve() == DEFAULT_CONFIG.resolve()
    except (OSError, RuntimeError):  # a symlink loop: read_layer names it
        packaged = False
    if path is not None and not packaged:
        layers.append(read_layer(Path(path)))
    merged = merge_layers(layers)
    top = layers[-1]
    return _ConfigReader(merged, top.path).read(
        path=top.path,
        sha256=top.sha256,
        files=tuple(ConfigFile(layer.path, layer.sha256) for layer in layers),
    )


def _unknown_first_stage(name: str, first_stages: dict[str, FirstStageSpec]) -> str:
    hint = closest(name, first_stages, cutoff=0.75)
    return f"unknown first_stage {name!r}" + (f"; did you mean {hint!r}?" if hint else "")


class _ConfigReader(ValueChecks):
    def __init__(self, merged: MergedConfig, fallback: Path) -> None:
        self.merged = merged
        self.raw = merged.raw
        self.fallback = fallback
        #: the file of the entry being read, where its place alone cannot tell (a dataset's place
        #: repeats across files; a suite's defaults come from several)
        self.entry_file: Path | None = None

    def fail(self, where: str, what: str, within: str | None = None) -> UserError:
        """A refusal naming the file the entry at `where` (or the place `within` it) came from."""
        origin = self.entry_file or self.merged.origin(within or where, self.fallback)
        return UserError(f"{origin}: {where}: {what}")

    def read(self, **identity: Any) -> BenchmarkConfig:
        """The merged entries checked and typed; `identity` is the files' (path, sha256, files)."""
        defaults = self.raw["defaults"]
        self.known_keys("defaults", defaults, DEFAULTS_KEYS)
        first_stages = {
            name: self._first_stage(name, body) for name, body in self.raw["first_stages"].items()
        }
        self._refuse_fallback_loops(first_stages)
        suites = {name: self._suite(name, body, first_stages) for name, body in self.raw["suites"].items()}
        self._refuse_unknown_references(first_stages, suites)
        models = {name: self._model(name, body) for name, body in self.raw["models"].items()}
        # the packaged file gives every default, so only a user's file can have blanked one
        default_model = self.text("defaults.model", defaults.get("model"))
        if not default_model:
            raise self.fail("defaults.model", "names the model of a command without --model; give one")
        return BenchmarkConfig(
            top_k=self.top_k(defaults.get("top_k")),
            metrics=self.metrics(defaults.get("metrics")),
            default_model=default_model,
            first_stages=first_stages,
            suites=suites,
            models=models,
            **identity,
        )

    def _first_stage(self, name: str, body: Any) -> FirstStageSpec:
        from rerank_eval.first_stage import kind as first_stage_kind
        from rerank_eval.first_stage import kind_names

        where = f"first_stages.{name}"
        if not isinstance(body, dict) or body.get("kind") not in kind_names():
            raise self.fail(where, f"needs kind: one of {', '.join(kind_names())}")
        settings = {k: v for k, v in body.items() if k not in ("kind", "label", "reference", "fallback")}
        try:
            checked = first_stage_kind(body["kind"]).validate(where, settings)
        except UserError as exc:
            raise UserError(f"{self.merged.origin(where, self.fallback)}: {exc}") from None
        references = body.get("reference")
        references = [references] if references is None or isinstance(references, str) else references
        if not isinstance(references, list):
            raise self.fail(f"{where}.reference", f"expected a name or a list of names, got {references!r}")
        fallback = self.text(f"{where}.fallback", body.get("fallback"))
        if fallback is not None and fallback not in self.raw["first_stages"]:
            raise self.fail(f"{where}.fallback", f"unknown first stage {fallback!r}")
        return FirstStageSpec(
            name=name,
            kind=body["kind"],
            label=self.text(f"{where}.label", body.get("label"), name),
            reference=tuple(self.required_text(f"{where}.reference", r) for r in references if r is not None),
            settings=checked,
            fallback=fallback,
        )

    def _refuse_fallback_loops(self, first_stages: dict[str, FirstStageSpec]) -> None:
        """A fallback chain is followed until an entry can run; one that comes back to an entry it
        passed would never end where nothing in it can run."""
        for name, spec in first_stages.items():
            chain = [name]
            while spec.fallback is not None:
                if spec.fallback in chain:  # the loop is from there on (an entry before it leads in)
                    loop = chain[chain.index(spec.fallback) :]
                    where = f"first_stages.{loop[0]}.fallback"
                    text = " -> ".join([*loop, loop[0]])
                    raise self.fail(where, f"the fallbacks go round in a loop ({text})")
                chain.append(spec.fallback)
                spec = first_stages[spec.fallback]

    def _refuse_unknown_references(
        self, first_stages: dict[str, FirstStageSpec], suites: dict[str, SuiteSpec]
    ) -> None:
        """A first stage's `reference` names the published figures its results are checked against;
        a name no dataset of the config has figures under (a typo) checked nothing, silently."""
        datasets = [spec for suite in suites.values() for spec in suite.datasets]
        known = {name for spec in datasets for name in spec.published_sources}
        for name, stage in first_stages.items():
            for reference in stage.reference:
                if reference not in known:
                    raise self.fail(
                        f"first_stages.{name}.reference",
                        f"no dataset of the config has published figures under {reference!r} "
                        f"(names with figures: {', '.join(sorted(known)) or 'none'})"[:600],
                    )

    def _suite(self, name: str, body: dict[str, Any], first_stages: dict[str, FirstStageSpec]) -> SuiteSpec:
        where = f"suites.{name}"
        if not body["datasets"]:
            raise self.fail(where, "needs a non-empty list under datasets")
        self.known_keys(where, body, SUITE_KEYS)
        defaults = body.get("defaults", {})
        self._check_suite_defaults(where, defaults, first_stages)
        datasets = []
        for entry, (place, path) in zip(body["datasets"], self.merged.dataset_places[name], strict=True):
            if isinstance(entry, dict):  # a field left out or null takes the suite's default
                given = {k: v for k, v in entry.items() if v is not None or k not in defaults}
                entry = {**defaults, **given}
            datasets.append(self._dataset(place, path, entry, first_stages))
        label = self.text(f"{where}.average_label", body.get("average_label"), f"{name} average")
        self._check_additions(name, label, datasets)
        datasets = self._group_references(where, body.get("groups"), datasets)
        return SuiteSpec(name=name, average_label=label, datasets=tuple(datasets))

    def _group_references(self, where: str, groups: Any, datasets: list[DatasetSpec]) -> list[DatasetSpec]:
        """The suite's `groups` (a group's own published figures, where no member has one of its
        own, e.g. jina-embeddings-v3 on CQADupStack) given to each member of the group."""
        self.entry_file = self.merged.origin(f"{where}.groups", self.fallback)
        try:
            references = {}
            for group, body in self.mapping(f"{where}.groups", groups).items():
                place = f"{where}.groups.{group}"
                if group not in {d.group for d in datasets if d.group}:
                    raise self.fail(place, f"no dataset of the suite is in group {group!r}")
                self.known_keys(place, self.mapping(place, body), GROUP_KEYS)
                references[group] = self.published_figures(f"{place}.reference", body.get("reference"))
        finally:
            self.entry_file = None
        return [
            replace(d, group_reference=references[d.group]) if d.group in references else d for d in datasets
        ]

    def _check_suite_defaults(
        self, where: str, defaults: dict[str, Any], first_stages: dict[str, FirstStageSpec]
    ) -> None:
        """Each default checked as the entries' own fields are, naming the file that set it."""
        for key, value in defaults.items():
            self.entry_file = self.merged.origin(f"{where}.defaults.{key}", self.fallback)
            try:
                self.known_keys(f"{where}.defaults", {key: value}, SUITE_DEFAULT_KEYS)
                if key in ("drop_self_matches", "in_average"):
                    self.flag(f"{where}.defaults.{key}", value, False)
                elif key == "language":
                    self.language(f"{where}.defaults.{key}", value)
                else:
                    text = self.text(f"{where}.defaults.{key}", value)
                    if key == "first_stage" and text is not None and text not in first_stages:
                        raise self.fail(f"{where}.defaults.{key}", _unknown_first_stage(text, first_stages))
            finally:
                self.entry_file = None

    def _check_additions(self, name: str, label: str, datasets: list[DatasetSpec]) -> None:
        """A dataset a later file adds to an earlier file's suite joins that suite's headline
        average only under a label of the adding file: `BEIR-13` must stay the 13 datasets that
        published figures average."""
        label_file = self.merged.origin(f"suites.{name}.average_label", self.fallback)
        added = self.merged.additions.get(name, set())
        for spec, (place, path) in zip(datasets, self.merged.dataset_places[name], strict=True):
            if spec.key in added and spec.in_average and path != label_file:
                raise UserError(
                    f"{path}: {place}: adds {spec.key!r} to the headline average of suite {name!r} "
                    f"({label}, defined in {label_file}); set in_average: false, or give the suite an "
                    f"average_label of your own"
                )

    def _dataset(
        self, where: str, path: Path, entry: Any, first_stages: dict[str, FirstStageSpec]
    ) -> DatasetSpec:
        """One dataset entry (the suite's defaults filled in); refusals name `path`, its file."""
        self.entry_file = path
        try:
            return self._checked_dataset(where, entry, first_stages)
        finally:
            self.entry_file = None

    def _checked_dataset(
        self, where: str, entry: Any, first_stages: dict[str, FirstStageSpec]
    ) -> DatasetSpec:
        if not isinstance(entry, dict):
            raise self.fail(where, "expected a mapping")
        self.known_keys(where, entry, DATASET_KEYS)
        if "key" not in entry:
            raise self.fail(where, "missing key")
        local = self._local_files(where, entry)
        first_stage = self.text(f"{where}.first_stage", entry.get("first_stage"))
        if first_stage is not None and first_stage not in first_stages:
            raise self.fail(where, _unknown_first_stage(first_stage, first_stages))
        return DatasetSpec(
            key=self.dataset_key(f"{where}.key", entry["key"]),
            ir_datasets_id=None if local else self.required_text(f"{where}.id", entry["id"]),
            language=self.language(f"{where}.language", entry.get("language")),
            first_stage=first_stage,
            drop_self_matches=self.flag(f"{where}.drop_self_matches", entry.get("drop_self_matches"), False),
            in_average=self.flag(f"{where}.in_average", entry.get("in_average"), True),
            group=self.text(f"{where}.group", entry.get("group")),
            run_name=self.repository_path(f"{where}.run_name", entry.get("run_name")),
            run_file=self.repository_path(f"{where}.run_file", entry.get("run_file")),
            reference=self.published_figures(f"{where}.reference", entry.get("reference")),
            reference_r100=self.published_figures(f"{where}.reference_r100", entry.get("reference_r100")),
            instructions=self.named_values(f"{where}.instructions", entry.get("instructions"), str),
            local=local,
        )

    def _local_files(self, where: str, entry: dict[str, Any]) -> LocalFiles | None:
        """The files of a local dataset (None for an ir_datasets id): a BEIR-format folder
        (`path`, `split`) or `corpus`, `queries` and `qrels`; relative paths are taken from the
        folder of the file the entry is in. Whether they exist is checked when the dataset is run."""
        local_keys = [k for k in ("path", "split", *LOCAL_FILE_KEYS) if k in entry]
        if "id" in entry:
            if local_keys:
                other = local_keys[0]
                raise self.fail(where, f"gives both id (ir_datasets) and {other} (local files); use one")
            return None
        if not local_keys:
            raise self.fail(where, "missing id (ir_datasets), path (a BEIR folder) or corpus, queries, qrels")
        base = (self.entry_file or self.fallback).parent

        def located(key: str, value: Any) -> Path:
            return base / Path(self.required_text(f"{where}.{key}", value)).expanduser()

        if "path" in entry:
            if any(k in entry for k in LOCAL_FILE_KEYS):
                raise self.fail(where, "gives both path (a BEIR-format folder) and files; use one")
            folder = located("path", entry["path"])
            split = self.name(f"{where}.split", self.text(f"{where}.split", entry.get("split"), "test"))
            return LocalFiles(
                corpus=str(folder / "corpus.jsonl"),
                queries=str(folder / "queries.jsonl"),
                qrels=str(folder / "qrels" / f"{split}.tsv"),
                folder=str(folder),
            )
        missing = [k for k in LOCAL_FILE_KEYS if k not in entry]
        if missing or "split" in entry:
            problem = f"missing {', '.join(missing)}" if missing else "split goes with path (a BEIR folder)"
            raise self.fail(where, f"{problem} (a local dataset names corpus, queries and qrels)")
        return LocalFiles(**{k: str(located(k, entry[k])) for k in LOCAL_FILE_KEYS})

    def _model(self, name: str, body: Any) -> ModelPreset:
        where = f"models.{name}"
        if not isinstance(body, dict) or "family" not in body:
            raise self.fail(where, "needs a family")
        self.known_keys(where, body, MODEL_KEYS)
        return ModelPreset(
            name=name,
            family=self.required_text(f"{where}.family", body["family"]),
            model=self.text(f"{where}.model", body.get("model")),
            settings=dict(self.mapping(f"{where}.settings", body.get("settings"))),
            description=self.text(f"{where}.description", body.get("description"), "", prose=True),
            trust_remote_code=self.flag(f"{where}.trust_remote_code", body.get("trust_remote_code"), False),
            package=self.text(f"{where}.package", body.get("package")),
            size=self.text(f"{where}.size", body.get("size"), "", prose=True),
            gpu_memory=self.text(f"{where}.gpu_memory", body.get("gpu_memory"), "", prose=True),
            unverified=self.text(f"{where}.unverified", body.get("unverified"), "", prose=True),
        )
