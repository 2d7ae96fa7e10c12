"""Suites, datasets, first-stage sources and model presets, read from `benchmarks.yaml`.

The packaged file is the default; users pass `--config` to use their own. Every field that moves a
number (first stage, self-match policy, top-k, metrics) is read here and nowhere else, so the
manifest can record exactly what was used.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from rerank_eval.errors import UserError

DEFAULT_CONFIG = Path(__file__).with_name("benchmarks.yaml")


@dataclass(frozen=True)
class FirstStageSpec:
    """Where first-stage candidates come from when the user supplies no run file.

    `kind` names a registered first-stage kind (rerank_eval/first_stage); `settings` are that
    kind's own, checked by it and completed with its defaults.
    """

    name: str
    kind: str
    label: str
    reference: str | None = None  # key of DatasetSpec.reference holding the published figure
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """One row of a suite: an ir_datasets id plus the protocol choices that change its numbers."""

    key: str
    ir_datasets_id: str
    language: str
    first_stage: str
    drop_self_matches: bool
    in_average: bool
    group: str | None = None
    run_name: str | None = None
    run_file: str | None = None
    reference: dict[str, float] = field(default_factory=dict)
    #: per-dataset instructions for models that take one, by preset name or family
    instructions: dict[str, str] = field(default_factory=dict)

    @property
    def row(self) -> str:
        """The table row this dataset contributes to (its group, or itself)."""
        return self.group or self.key


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    average_label: str
    datasets: tuple[DatasetSpec, ...]

    def select(self, names: list[str] | None) -> list[DatasetSpec]:
        """Datasets named by key or group, in suite order; all of them when `names` is empty."""
        if not names:
            return list(self.datasets)
        known = {d.key for d in self.datasets} | {d.group for d in self.datasets if d.group}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UserError(
                f"unknown dataset {unknown[0]!r} in suite {self.name!r}; known: {', '.join(sorted(known))}"
            )
        wanted = set(names)
        return [d for d in self.datasets if d.key in wanted or d.group in wanted]


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


@dataclass(frozen=True)
class BenchmarkConfig:
    path: Path
    top_k: int
    metrics: tuple[str, ...]
    default_model: str
    first_stages: dict[str, FirstStageSpec]
    suites: dict[str, SuiteSpec]
    models: dict[str, ModelPreset]
    #: the file's content hash: a result records it with the entries it used
    sha256: str = ""

    def suite(self, name: str) -> SuiteSpec:
        if name not in self.suites:
            raise UserError(f"unknown suite {name!r} in {self.path}; known: {', '.join(sorted(self.suites))}")
        return self.suites[name]

    def first_stage(self, name: str) -> FirstStageSpec:
        """An entry of first_stages, or a `KIND:ARGUMENT` form such as `dense:ENCODER`."""
        from rerank_eval.first_stage import resolve

        return resolve(name, self.first_stages)


def load_config(path: Path | None = None) -> BenchmarkConfig:
    """Read and validate a benchmarks file; errors name the file and the offending entry."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        content = path.read_bytes()
        raw = yaml.safe_load(content.decode("utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return replace(_ConfigReader(path, raw).read(), sha256=hashlib.sha256(content).hexdigest())


class _ConfigReader:
    def __init__(self, path: Path, raw: dict[str, Any]) -> None:
        self.path = path
        self.raw = raw

    def fail(self, where: str, what: str) -> UserError:
        return UserError(f"{self.path}: {where}: {what}")

    def mapping(self, where: str, value: Any) -> dict[str, Any]:
        """A mapping (an absent one is empty); anything else names the entry."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {value!r}")
        return value

    def number(self, where: str, value: Any, kind: type[int] | type[float]) -> Any:
        """An int (or a float where floats are allowed), never a bool or a string."""
        allowed = (int,) if kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise self.fail(where, f"expected {'an integer' if kind is int else 'a number'}, got {value!r}")
        return kind(value)

    def read(self) -> BenchmarkConfig:
        defaults = self.mapping("defaults", self.raw.get("defaults"))
        first_stages = {
            name: self._first_stage(name, body)
            for name, body in self.mapping("first_stages", self.raw.get("first_stages")).items()
        }
        suites = {
            name: self._suite(name, body, first_stages)
            for name, body in self.mapping("suites", self.raw.get("suites")).items()
        }
        presets = self.mapping("models", self.raw.get("models"))
        models = {name: self._model(name, body) for name, body in presets.items()}
        metrics = defaults.get("metrics", ["nDCG@10"])
        if isinstance(metrics, str):
            metrics = [metrics]
        if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
            raise self.fail("defaults.metrics", f"expected a list of measure names, got {metrics!r}")
        return BenchmarkConfig(
            path=self.path,
            top_k=self.number("defaults.top_k", defaults.get("top_k", 100), int),
            metrics=tuple(metrics),
            default_model=str(defaults.get("model", "bm25")),
            first_stages=first_stages,
            suites=suites,
            models=models,
        )

    def _first_stage(self, name: str, body: Any) -> FirstStageSpec:
        from rerank_eval.first_stage import kind as first_stage_kind
        from rerank_eval.first_stage import kind_names

        where = f"first_stages.{name}"
        if not isinstance(body, dict) or body.get("kind") not in kind_names():
            raise self.fail(where, f"needs kind: one of {', '.join(kind_names())}")
        settings = {k: v for k, v in body.items() if k not in ("kind", "label", "reference")}
        try:
            checked = first_stage_kind(body["kind"]).validate(where, settings)
        except UserError as exc:
            raise UserError(f"{self.path}: {exc}") from None
        reference = body.get("reference")
        return FirstStageSpec(
            name=name,
            kind=body["kind"],
            label=str(body.get("label", name)),
            reference=None if reference is None else str(reference),
            settings=checked,
        )

    def _suite(self, name: str, body: Any, first_stages: dict[str, FirstStageSpec]) -> SuiteSpec:
        if not isinstance(body, dict) or not isinstance(body.get("datasets"), list):
            raise self.fail(f"suites.{name}", "needs a list under datasets")
        datasets = []
        for index, entry in enumerate(body["datasets"]):
            where = f"suites.{name}.datasets[{index}]"
            if not isinstance(entry, dict):
                raise self.fail(where, "expected a mapping")
            missing = [k for k in ("key", "id", "first_stage") if k not in entry]
            if missing:
                raise self.fail(where, f"missing {', '.join(missing)}")
            if entry["first_stage"] not in first_stages:
                raise self.fail(where, f"unknown first_stage {entry['first_stage']!r}")
            datasets.append(
                DatasetSpec(
                    key=str(entry["key"]),
                    ir_datasets_id=str(entry["id"]),
                    language=str(entry.get("language", "en")),
                    first_stage=str(entry["first_stage"]),
                    drop_self_matches=bool(entry.get("drop_self_matches", False)),
                    in_average=bool(entry.get("in_average", True)),
                    group=entry.get("group"),
                    run_name=entry.get("run_name"),
                    run_file=entry.get("run_file"),
                    reference={
                        k: self.number(f"{where}.reference.{k}", v, float)
                        for k, v in self.mapping(f"{where}.reference", entry.get("reference")).items()
                    },
                    instructions={
                        k: str(v)
                        for k, v in self.mapping(f"{where}.instructions", entry.get("instructions")).items()
                    },
                )
            )
        keys = [d.key for d in datasets]
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        if duplicated:
            raise self.fail(f"suites.{name}", f"dataset key {duplicated[0]!r} appears twice")
        return SuiteSpec(
            name=name,
            average_label=str(body.get("average_label", f"{name} average")),
            datasets=tuple(datasets),
        )

    def _model(self, name: str, body: Any) -> ModelPreset:
        if not isinstance(body, dict) or "family" not in body:
            raise self.fail(f"models.{name}", "needs a family")
        return ModelPreset(
            name=name,
            family=str(body["family"]),
            model=body.get("model"),
            settings=dict(self.mapping(f"models.{name}.settings", body.get("settings"))),
            description=str(body.get("description", "")),
            trust_remote_code=bool(body.get("trust_remote_code", False)),
            package=body.get("package"),
            size=str(body.get("size", "")),
            gpu_memory=str(body.get("gpu_memory", "")),
        )
