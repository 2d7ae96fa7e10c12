"""`beir`, `miracl` and `run`: one benchmark command, declared once, bound to a suite or taking it.

The command builds the `RunPlan` from its options and hands it to the pipeline; the table it
prints is rendered from the saved result folder, as `export` would.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import shlex
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from rerank_eval.cli.app import app, console, user_errors
from rerank_eval.cli.options import (
    ConfigOpt,
    DatasetsOpt,
    DeviceOpt,
    DtypeOpt,
    FamilyOpt,
    FirstStageOpt,
    FirstStageSetOpt,
    FreshOpt,
    MetricOpt,
    ModelsOpt,
    OrderOpt,
    OutOpt,
    RemoteCodeOpt,
    RunOpt,
    RunPatternOpt,
    RunReferenceOpt,
    RunsDirOpt,
    SettingOpt,
    TopKOpt,
    dataset_names,
    first_stage_settings_from,
    parse_pairs,
    settings_from,
)
from rerank_eval.config.reader import load_config
from rerank_eval.errors import UserError


def default_out(models: list[str], suite: str, claim: bool = True) -> Path:
    """results/<models>-<suite>-<time>, taken for this run: the user gave no --out to choose.

    A name an earlier run holds (published, or being written) gets -2, -3, .... The name is
    claimed at once by making the folder the run will write in (`NAME.incomplete/` for one model,
    `NAME/` for several), which fails for all but one of jobs started at the same instant (an
    array job), so each of them goes on to the next number. `release_default_out` removes that
    folder again where the run ended before writing anything in it. Without `claim` (the ranks
    of a torchrun job other than 0, which write nothing) the name alone."""
    from rerank_eval.pipeline.execute import model_folder_name

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = "+".join(model_folder_name(m) for m in models)
    base = Path("results") / f"{name}-{suite}-{stamp}"
    if not claim:
        return base
    chosen, number = base, 1
    while True:
        if not (chosen.exists() or chosen.is_symlink()):
            try:
                _claimed(chosen, models).mkdir(parents=True)
                return chosen
            except FileExistsError:
                pass  # taken an instant ago by a job started with this one
            except OSError as exc:
                raise UserError(f"cannot create a result folder in results/: {exc.strerror or exc}") from None
        number += 1
        chosen = base.with_name(f"{base.name}-{number}")


def _claimed(chosen: Path, models: list[str]) -> Path:
    from rerank_eval.results.folder import INCOMPLETE_SUFFIX

    return chosen.with_name(chosen.name + INCOMPLETE_SUFFIX) if len(models) == 1 else chosen


def release_default_out(chosen: Path, models: list[str]) -> None:
    """Remove the folder `default_out` made, where it is still empty (a run refused before it
    wrote anything); one holding results, or published and gone, is left as it is."""
    with contextlib.suppress(OSError):
        _claimed(chosen, models).rmdir()


def benchmark_command(suite: str | None) -> Callable[..., None]:
    """The benchmark command bound to a suite (beir, miracl) or taking it as argument (run)."""

    @user_errors
    def command(
        suite_name: Annotated[
            str, typer.Argument(metavar="SUITE", help="A suite of the config, e.g. beir or miracl.")
        ],
        datasets: DatasetsOpt = None,
        model: ModelsOpt = None,
        family: FamilyOpt = None,
        top_k: TopKOpt = None,
        metric: MetricOpt = None,
        run: RunOpt = None,
        runs_dir: RunsDirOpt = None,
        run_pattern: RunPatternOpt = "{key}.trec",
        run_reference: RunReferenceOpt = None,
        first_stage: FirstStageOpt = None,
        first_stage_set: FirstStageSetOpt = None,
        candidate_order: OrderOpt = "first-stage",
        out: OutOpt = None,
        config: ConfigOpt = None,
        device: DeviceOpt = None,
        dtype: DtypeOpt = None,
        setting: SettingOpt = None,
        fresh: FreshOpt = False,
        trust_remote_code: RemoteCodeOpt = False,
    ) -> None:
        from rerank_eval.evaluation.measures import canonical_measures
        from rerank_eval.first_stage import RunLocation
        from rerank_eval.pipeline.distributed import default_device
        from rerank_eval.pipeline.execute import execute_models
        from rerank_eval.pipeline.plan import CandidateOrder, RunPlan
        from rerank_eval.reporting.render.terminal import terminal_table
        from rerank_eval.reporting.report import Report, results_table
        from rerank_eval.rerankers import load_reranker
        from rerank_eval.results.folder import load_result

        cfg = load_config(config)
        suite_spec = cfg.suite(suite_name)
        keys = dataset_names(datasets)
        model_names = list(model or [cfg.default_model])
        plan = RunPlan(
            config=cfg,
            suite=suite_spec,
            datasets=suite_spec.select(keys),
            top_k=cfg.top_k if top_k is None else top_k,
            metrics=canonical_measures(metric or cfg.metrics),
            candidate_order=CandidateOrder.parse(candidate_order),
            runs=RunLocation(
                overrides={k: Path(v) for k, v in parse_pairs(run, "--run").items()},
                folder=runs_dir,
                pattern=run_pattern,
                reference=run_reference,
            ),
            first_stage_override=first_stage,
            first_stage_settings=first_stage_settings_from(first_stage_set),
            fresh=fresh,
            # the same command minus --fresh, which would throw the journaled scores away
            resume_command=_resume_command(),
        )
        plan.validate()
        settings = settings_from(setting)

        def load(name: str):
            return load_reranker(
                name, device=device or default_device(), dtype=dtype, family=family, config=cfg,
                trust_remote_code=trust_remote_code, **settings,
            )  # fmt: skip

        from rerank_eval.pipeline.distributed import ranks

        chosen = out is None and ranks().is_main
        destination = out or default_out(model_names, suite_name, claim=chosen)
        try:
            folders = execute_models(plan, model_names, load, destination, sys.argv)
        finally:
            if chosen:
                release_default_out(destination, model_names)
        if not folders:
            return  # a torchrun rank other than 0: rank 0 reports
        reports = [Report(saved.manifest, saved.per_query) for saved in map(load_result, folders)]
        console.print(terminal_table(results_table(reports)))
        console.print(f"results: {destination}")

    if suite is None:
        return command

    @functools.wraps(command)
    def bound(**kwargs: Any) -> None:
        command(suite, **kwargs)

    # the bound command's signature is the command's without SUITE (Typer reads options from it)
    signature = inspect.signature(command, eval_str=True)
    parameters = [p for name, p in signature.parameters.items() if name != "suite_name"]
    bound.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    bound.__annotations__ = {p.name: p.annotation for p in parameters}
    return bound


app.command(
    "beir",
    help=(
        "Rerank BEIR (default: the published BM25 flat runs as first stage) "
        "and print nDCG@10 per dataset with the BEIR-13 average."
    ),
)(benchmark_command("beir"))
app.command(
    "miracl",
    help=(
        "Rerank MIRACL dev per language (select with --languages) and print "
        "nDCG@10 per language with the average."
    ),
)(benchmark_command("miracl"))
app.command("run", help="Rerank any suite of the config (yours with --config) and print its table.")(
    benchmark_command(None)
)


def _resume_command() -> str:
    """The command that resumes this run: the same minus --fresh, which would throw the journaled
    scores away; under torchrun, the same torchrun command around it."""
    command = shlex.join(["rerank-eval", *(a for a in sys.argv[1:] if a != "--fresh")])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        without = " without --fresh" if "--fresh" in sys.argv[1:] else ""
        return f"the same torchrun command{without}, running {command}"
    return command
