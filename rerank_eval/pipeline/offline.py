"""Everything a run would download and cannot, said at once.

Without internet, the first missing file used to stop a run, and fixing it revealed the next one.
Now a run of several datasets or models asks for each of them in turn before any work (every
lookup fails fast), as does any run when it meets a `MissingDownload`; it collects what is
missing and ends with one line naming all of it, the exact `rerank-eval fetch` command that fills
the caches, and the folders to copy.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable
from pathlib import Path

from rerank_eval.config.schema import DatasetSpec
from rerank_eval.datasets import open_dataset
from rerank_eval.errors import MissingDownload, UserError
from rerank_eval.first_stage import FirstStageRequest, fetch_first_stage, kind
from rerank_eval.hub import internet_unreachable
from rerank_eval.pipeline.plan import RunPlan


def _downloaded_models(plan: RunPlan, models: list[str]) -> list[str]:
    """The models whose files come from the Hub or a package (a checkpoint directory, given or
    named by a preset, downloads nothing; a preset without model files neither)."""
    names = []
    for name in models:
        preset = plan.config.models.get(name)
        source = preset.model if preset else name
        if source and not Path(source).expanduser().exists():
            names.append(name)
    return names


def _dataset_probe(spec: DatasetSpec) -> None:
    """Queries, judgements and the doc store, as a run reads them."""
    dataset = open_dataset(spec)
    dataset.queries()
    dataset.qrels()
    dataset.documents([])


def _first_stage_probe(plan: RunPlan, spec: DatasetSpec) -> None:
    """The first stage's downloads (a published run, an encoder), apart from the dataset's."""
    if plan.runs.path_for(spec) is None:
        source = plan.first_stage_of(spec)
        if kind(source.kind).downloads:
            depth = plan.candidate_policy(spec).depth
            fetch_first_stage(FirstStageRequest(spec, source, open_dataset(spec), {}, depth), build=False)


def _probes(plan: RunPlan, models: list[str]) -> list[Callable[[], object]]:
    """Lookups of everything the run downloads; local datasets download nothing."""
    from rerank_eval.rerankers import model_files

    probes: list[Callable[[], object]] = [
        functools.partial(model_files, name, plan.config) for name in _downloaded_models(plan, models)
    ]
    for spec in plan.datasets:
        if spec.local is None:
            probes.append(functools.partial(_dataset_probe, spec))
        probes.append(functools.partial(_first_stage_probe, plan, spec))
    return probes


def missing_downloads(plan: RunPlan, models: list[str]) -> list[MissingDownload]:
    """What each model and dataset of the run would download and cannot, in run order; other
    problems are left for the run itself to report once the files are there."""
    missing: dict[str, MissingDownload] = {}
    for probe in _probes(plan, models):
        try:
            probe()
        except MissingDownload as exc:
            missing.setdefault(exc.item, exc)
        except UserError:
            continue
    return list(missing.values())


def fetch_command(plan: RunPlan, models: list[str]) -> str:
    """The `rerank-eval fetch` command that fills every cache this run reads: datasets whose run
    file the user gives (`--run`, `--runs-dir`) fetch no first stage (a dense default would encode
    a whole corpus for nothing), so a run with both kinds gets two commands."""
    supplied = [spec for spec in plan.datasets if plan.runs.path_for(spec) is not None]
    fetched = [spec for spec in plan.datasets if plan.runs.path_for(spec) is None]
    commands = []
    for specs, with_first_stage in ((fetched, True), (supplied, False)):
        if not specs:
            continue
        words = ["rerank-eval", "fetch", plan.suite.name]
        if [d.key for d in specs] != [d.key for d in plan.suite.datasets]:  # (the whole suite: none)
            words += ["--datasets", ",".join(d.key for d in specs)]
        for model in _with_files(plan, models) if not commands else []:
            words += ["--model", model]
        if with_first_stage and plan.first_stage_override:
            words += ["--first-stage", plan.first_stage_override]
            for name, value in plan.first_stage_settings.items():
                words += ["--first-stage-set", f"{name}={value}"]
        if with_first_stage and any(kind(plan.first_stage_of(spec).kind).device_keyed for spec in specs):
            words.append("--no-encode")  # encoded here, on this machine's device, not the fetcher's
        if not with_first_stage:
            words.append("--no-first-stage")
        if len(plan.config.files) > 1:
            words += ["--config", str(plan.config.path)]
        commands.append(shlex.join(words))
    return " && ".join(commands)


def _with_files(plan: RunPlan, models: list[str]) -> list[str]:
    """The models that have files to fetch: not the bm25 and first-stage presets, which keep the
    first-stage order."""
    from rerank_eval.rerankers import registry

    presets = [plan.config.models.get(model) for model in models]
    return [m for m, p in zip(models, presets) if p is None or registry.family(p.family).needs_model]


def everything_missing(plan: RunPlan, models: list[str], first: MissingDownload) -> UserError:
    """One line: all that is missing, the fetch command, the folders to copy (`first`'s own
    message with the fetch command, which says where its one file goes, when nothing else is
    missing; `first` as it is when the internet can be reached: the lookups would then download
    instead of failing)."""
    if not internet_unreachable():
        return first
    return _one_line(plan, models, missing_downloads(plan, models) or [first])


def refuse_what_is_missing(plan: RunPlan, models: list[str]) -> None:
    """Before any work, without internet: everything missing, said at once. Otherwise a run of
    several datasets or models would rerank the first ones (hours for MIRACL en) before meeting a
    later one's missing files; one dataset and one model meet theirs before any work a miss would
    waste (the model loads first), and a torchrun job's ranks would probe side by side, so these
    go on as they are."""
    from rerank_eval.runtime.distributed import ranks

    if (len(plan.datasets) == 1 and len(models) == 1) or ranks().world > 1 or not internet_unreachable():
        return
    found = missing_downloads(plan, models)
    if found:
        raise _one_line(plan, models, found)


def _one_line(plan: RunPlan, models: list[str], found: list[MissingDownload]) -> UserError:
    if len(found) == 1:
        return UserError(found[0].advice(f"`{fetch_command(plan, models)}`"))
    items = [exc.item for exc in found]
    folders: dict[str, str] = {}
    for exc in found:
        folders.setdefault(exc.variable, exc.cache)
    copies = " and ".join(folders.values())
    variables = ", ".join(folders)
    return UserError(
        f"without internet, missing: {'; '.join(items)}. On a machine with internet run "
        f"`{fetch_command(plan, models)}`, then copy {copies} here (or point {variables} at the copies)"
    )
