"""Reading a benchmarks YAML file into `BenchmarkConfig`.

The packaged file is the default; users pass `--config` to use their own. A file may come from
someone else, so it is read strictly (bounded_yaml; unknown keys, non-boolean flags, out-of-range
numbers and names that cannot be file names are refused), each refusal naming the file and the
entry.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from rerank_eval.config.bounded_yaml import Refused, load_bounded
from rerank_eval.config.schema import (
    DATASET_KEYS,
    DEFAULT_CONFIG,
    DEFAULTS_KEYS,
    MAX_TOP_K,
    MODEL_KEYS,
    SUITE_KEYS,
    TOP_LEVEL_KEYS,
    BenchmarkConfig,
    DatasetSpec,
    FirstStageSpec,
    ModelPreset,
    SuiteSpec,
)
from rerank_eval.errors import UserError, closest
from rerank_eval.paths import name_problem


def load_config(path: Path | None = None) -> BenchmarkConfig:
    """Read and validate a benchmarks file; errors name the file and the offending entry."""
    path = Path(path) if path else DEFAULT_CONFIG
    from rerank_eval.paths import special_file_kind

    kind = special_file_kind(path)
    if kind:
        raise UserError(f"config {path} is {kind}, not a file")
    try:
        content = path.read_bytes()
        raw = load_bounded(content)
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid UTF-8") from None
    except Refused as exc:
        raise UserError(f"{path}, line {exc.line}: {exc.problem}") from None
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
        """An int (or a finite float where floats are allowed), never a bool or a string."""
        allowed = (int,) if kind is int else (int, float)
        if (
            isinstance(value, bool)
            or not isinstance(value, allowed)
            or value != value
            or abs(value) == float("inf")
        ):
            raise self.fail(where, f"expected {'an integer' if kind is int else 'a number'}, got {value!r}")
        return kind(value)

    def known_keys(self, where: str, body: dict[str, Any], accepted: tuple[str, ...]) -> None:
        """Refuse a key the entry does not take (a typo would otherwise change the protocol
        silently), suggesting the closest accepted one."""
        for key in body:
            if key not in accepted:
                close = closest(str(key), accepted)
                hint = f"; did you mean {close!r}?" if close else f" (accepted: {', '.join(accepted)})"
                raise self.fail(where, f"unknown key {key!r}{hint}")

    def flag(self, where: str, value: Any, default: bool) -> bool:
        """A YAML boolean (true/false), never a string such as 'no', which would read as true."""
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(where, f"expected true or false, got {value!r}")
        return value

    def text(self, where: str, value: Any, default: str | None = None) -> Any:
        """A string (numbers are taken as written); an absent one is `default`."""
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(where, f"expected a string, got {value!r}")
        return str(value)

    def required_text(self, where: str, value: Any) -> str:
        """A non-empty string (a key of a mapping, an id)."""
        text = self.text(where, value)
        if not text:
            raise self.fail(where, f"expected a non-empty string, got {value!r}")
        return text

    def named_values(self, where: str, value: Any, kind: type) -> dict[str, Any]:
        """A mapping from names to numbers (published figures) or to texts (instructions)."""
        named = self.mapping(where, value)
        if kind is float:
            return {
                self.required_text(where, k): self.number(f"{where}.{k}", v, float) for k, v in named.items()
            }
        return {self.required_text(where, k): self.text(f"{where}.{k}", v, "") for k, v in named.items()}

    def dataset_key(self, where: str, value: Any) -> str:
        """A dataset key: a name, and not one whose run file would collide with another's
        first-stage run (`runs/KEY.first-stage.trec`)."""
        key = self.name(where, value)
        if key.endswith(".first-stage"):
            raise self.fail(where, f"{key!r} cannot be used as a dataset key: it ends in .first-stage")
        return key

    def name(self, where: str, value: Any) -> str:
        """A name that also names files (a suite, a dataset key, a preset)."""
        problem = name_problem(value)
        if problem:
            raise self.fail(where, problem)
        return value

    def top_k(self, value: Any) -> int:
        top_k = self.number("defaults.top_k", value, int)
        if not 1 <= top_k <= MAX_TOP_K:
            raise self.fail("defaults.top_k", f"must be between 1 and {MAX_TOP_K:,}, got {top_k}")
        return top_k

    def metrics(self, value: Any) -> tuple[str, ...]:
        from rerank_eval.evaluation.measures import parse_measures

        metrics = [value] if isinstance(value, str) else value
        if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
            raise self.fail("defaults.metrics", f"expected a non-empty list of measure names, got {value!r}")
        try:
            parse_measures(metrics)
        except UserError as exc:
            raise self.fail("defaults.metrics", str(exc)) from None
        return tuple(metrics)

    def read(self) -> BenchmarkConfig:
        self.known_keys("top level", self.raw, TOP_LEVEL_KEYS)
        defaults = self.mapping("defaults", self.raw.get("defaults"))
        self.known_keys("defaults", defaults, DEFAULTS_KEYS)
        first_stages = {
            self.name("first_stages", name): self._first_stage(name, body)
            for name, body in self.mapping("first_stages", self.raw.get("first_stages")).items()
        }
        suites = {
            self.name("suites", name): self._suite(name, body, first_stages)
            for name, body in self.mapping("suites", self.raw.get("suites")).items()
        }
        presets = self.mapping("models", self.raw.get("models"))
        models = {self.name("models", name): self._model(name, body) for name, body in presets.items()}
        return BenchmarkConfig(
            path=self.path,
            top_k=self.top_k(defaults.get("top_k", 100)),
            metrics=self.metrics(defaults.get("metrics", ["nDCG@10"])),
            default_model=self.text("defaults.model", defaults.get("model"), "bm25"),
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
            label=self.text(f"{where}.label", body.get("label"), name),
            reference=self.text(f"{where}.reference", reference),
            settings=checked,
        )

    def _suite(self, name: str, body: Any, first_stages: dict[str, FirstStageSpec]) -> SuiteSpec:
        if not isinstance(body, dict) or not isinstance(body.get("datasets"), list) or not body["datasets"]:
            raise self.fail(f"suites.{name}", "needs a non-empty list under datasets")
        self.known_keys(f"suites.{name}", body, SUITE_KEYS)
        datasets = []
        for index, entry in enumerate(body["datasets"]):
            where = f"suites.{name}.datasets[{index}]"
            if not isinstance(entry, dict):
                raise self.fail(where, "expected a mapping")
            self.known_keys(where, entry, DATASET_KEYS)
            missing = [k for k in ("key", "id", "first_stage") if k not in entry]
            if missing:
                raise self.fail(where, f"missing {', '.join(missing)}")
            first_stage = self.text(f"{where}.first_stage", entry["first_stage"])
            if first_stage not in first_stages:
                raise self.fail(where, f"unknown first_stage {entry['first_stage']!r}")
            datasets.append(
                DatasetSpec(
                    key=self.dataset_key(f"{where}.key", entry["key"]),
                    ir_datasets_id=self.required_text(f"{where}.id", entry["id"]),
                    language=self.text(f"{where}.language", entry.get("language"), "en"),
                    first_stage=first_stage,
                    drop_self_matches=self.flag(
                        f"{where}.drop_self_matches", entry.get("drop_self_matches"), False
                    ),
                    in_average=self.flag(f"{where}.in_average", entry.get("in_average"), True),
                    group=self.text(f"{where}.group", entry.get("group")),
                    run_name=self.text(f"{where}.run_name", entry.get("run_name")),
                    run_file=self.text(f"{where}.run_file", entry.get("run_file")),
                    reference=self.named_values(f"{where}.reference", entry.get("reference"), float),
                    instructions=self.named_values(f"{where}.instructions", entry.get("instructions"), str),
                )
            )
        keys = [d.key for d in datasets]
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        if duplicated:
            raise self.fail(f"suites.{name}", f"dataset key {duplicated[0]!r} appears twice")
        return SuiteSpec(
            name=name,
            average_label=self.text(
                f"suites.{name}.average_label", body.get("average_label"), f"{name} average"
            ),
            datasets=tuple(datasets),
        )

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
            description=self.text(f"{where}.description", body.get("description"), ""),
            trust_remote_code=self.flag(f"{where}.trust_remote_code", body.get("trust_remote_code"), False),
            package=self.text(f"{where}.package", body.get("package")),
            size=self.text(f"{where}.size", body.get("size"), ""),
            gpu_memory=self.text(f"{where}.gpu_memory", body.get("gpu_memory"), ""),
        )
