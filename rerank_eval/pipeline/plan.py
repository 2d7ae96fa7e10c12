"""The run plan: everything that decides a run's numbers, fixed and checked before any work."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerank_eval.config.schema import BenchmarkConfig, DatasetSpec, FirstStageSpec, SuiteSpec, top_k_problem
from rerank_eval.errors import ParameterError, UserError, warn
from rerank_eval.evaluation.measures import canonical_measures, parse_measures, refuse_uncomputable
from rerank_eval.first_stage import CandidatePolicy, RunLocation
from rerank_eval.first_stage import kind as first_stage_kind
from rerank_eval.paths import fills_only, refuse_special_file

#: a shuffle's seed: ASCII digits (str.isdigit() takes superscripts, which int() refuses, and other
#: scripts' digits, which it reads), as many as a 64-bit seed has
SEED = re.compile(r"-?[0-9]{1,20}")


@dataclass(frozen=True)
class CandidateOrder:
    """The order in which candidates are shown to the model (`first-stage`, `reversed`, `shuffled:SEED`)."""

    kind: str
    seed: int | None = None

    @classmethod
    def parse(cls, text: str) -> CandidateOrder:
        if text in ("first-stage", "reversed"):
            return cls(text)
        seed = text.removeprefix("shuffled:")
        if text.startswith("shuffled:") and SEED.fullmatch(seed):
            return cls("shuffled", int(seed))
        raise UserError(f"unknown candidate order {text!r}; use first-stage, reversed or shuffled:SEED")

    def __str__(self) -> str:
        return f"shuffled:{self.seed}" if self.kind == "shuffled" else self.kind

    def positions(self, query_id: str, count: int) -> list[int]:
        """First-stage ranks in presentation order; a shuffle depends only on seed and query."""
        order = list(range(count))
        if self.kind == "reversed":
            order.reverse()
        elif self.kind == "shuffled":
            random.Random(f"{self.seed}\0{query_id}").shuffle(order)
        return order


@dataclass
class RunPlan:
    """Everything that decides a run's numbers, fixed before any work starts."""

    config: BenchmarkConfig
    suite: SuiteSpec
    datasets: list[DatasetSpec]
    top_k: int
    metrics: list[str]
    candidate_order: CandidateOrder
    runs: RunLocation = field(default_factory=RunLocation)
    first_stage_override: str | None = None
    #: settings of that first stage replaced (`--first-stage-set`; see first_stage.with_settings)
    first_stage_settings: dict[str, Any] = field(default_factory=dict)
    fresh: bool = False  # ignore (and replace) journaled scores
    resume_command: str = "the same command"
    #: the note that a configured first stage fell back was printed (validate runs more than once)
    fallbacks_announced: bool = field(default=False, repr=False)

    def candidate_policy(self, spec: DatasetSpec) -> CandidatePolicy:
        return CandidatePolicy(self.top_k, spec.drop_self_matches)

    def measures(self) -> list[str]:
        """The user's metrics plus the ones every table shows."""
        return canonical_measures([*self.metrics, f"R@{self.top_k}", "Judged@10"])

    def first_stage_of(self, spec: DatasetSpec) -> FirstStageSpec:
        """The first stage `spec` uses when the user gives it no run file."""
        return self.config.first_stage_for(spec, self.first_stage_override, self.first_stage_settings)

    def fell_back_from(self, spec: DatasetSpec, used: str) -> str | None:
        """The dataset's configured first stage when `used` replaced it (its fallback, where its kind
        cannot run here); None when it is what the dataset asked for or the command line chose."""
        if spec.first_stage and not self.first_stage_override and used != spec.first_stage:
            return spec.first_stage
        return None

    def validate(self) -> None:
        """Fail before any download or model load when the plan cannot work."""
        problem = top_k_problem(self.top_k)
        if problem:
            raise ParameterError("top_k", problem)
        refuse_uncomputable(parse_measures(self.measures()))
        self.config.command_line_first_stage(self.first_stage_override, self.first_stage_settings)
        for key, path in self.runs.overrides.items():
            if key not in {d.key for d in self.datasets}:
                raise ParameterError(
                    "runs.overrides", f"names dataset {key!r}, which this run does not include"
                )
            refuse_special_file(Path(path), f"run file for {key} {path}")
            if not Path(path).is_file():
                raise UserError(f"run file for {key} not found: {path}")
        if self.runs.folder is not None:
            if not self.runs.folder.is_dir():
                raise ParameterError("runs.folder", f"{self.runs.folder} is not a folder")
            if not fills_only(self.runs.pattern, ("key", "name")):
                raise ParameterError(
                    "runs.pattern", f"{self.runs.pattern!r} may use only {{key}} and {{name}}"
                )
        if self.runs.reference is not None:
            supplied = [spec for spec in self.datasets if self.runs.path_for(spec) is not None]
            if not supplied:
                raise ParameterError(
                    "runs.reference",
                    "describes run files you pass ({runs.overrides}, {runs.folder}); there are none",
                    mentions=("runs.overrides", "runs.folder"),
                )
            for spec in supplied:
                self.runs.reference_fields(spec)
        replaced: dict[tuple[str, str], list[str]] = {}
        for spec in self.datasets:
            if self.runs.path_for(spec) is None:
                used = self.first_stage_of(spec)
                first_stage_kind(used.kind).preflight(spec, used)
                configured = self.fell_back_from(spec, str(used.name))
                if configured:
                    replaced.setdefault((configured, str(used.name)), []).append(spec.key)
        for (configured, fallback), keys in replaced.items() if not self.fallbacks_announced else ():
            needs = first_stage_kind(self.config.first_stages[configured].kind).requirement
            warn(
                f"first stage {configured} cannot run here (it needs {needs}); "
                f"{', '.join(keys)} use {fallback} instead"
            )
        self.fallbacks_announced = True
