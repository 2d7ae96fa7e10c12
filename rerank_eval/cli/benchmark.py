"""`beir`, `miracl` and `run`: one benchmark command, declared once, bound to a suite or taking it.

The command builds the `RunPlan` from its options and hands it to the pipeline; the table it
prints is rendered from the saved result folder, as `export` would.
"""

from __future__ import annotations

import functools
import inspect
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
from rerank_eval.cli.result_folder import result_folder
from rerank_eval.config.reader import load_config
from rerank_eval.errors import UserError
from rerank_eval.results.manifest import command_words

if TYPE_CHECKING:
    from rerank_eval.pipeline.plan import RunPlan
    from rerank_eval.rerankers.base import Reranker

#: the options of NAME=VALUE settings: only their names are names
SETTING_OPTIONS = ("setting", "first_stage_set")


def _refuse_control_characters(arguments: dict[str, Any]) -> None:
    """Refuse, before any work, an argument holding a line break, tab, escape or text-direction
    control: each names a model, file, dataset or setting that reaches the manifest, run files and
    terminals, where the finished run would be refused after hours of scoring."""
    from rerank_eval.textlines import NOT_IN_A_NEW_NAME

    for parameter, value in arguments.items():
        for text in value if isinstance(value, list) else [value]:
            if parameter in SETTING_OPTIONS and isinstance(text, str):  # a value may span lines (a
                text = text.partition("=")[0]  # prompt): settings are recorded, never file names
            if isinstance(text, (str, Path)) and NOT_IN_A_NEW_NAME.search(str(text)):
                option = "SUITE" if parameter == "suite_name" else "--" + parameter.replace("_", "-")
                raise UserError(
                    f"{option} {str(text)!r}: holds a control character (a line break, tab, escape "
                    f"or text-direction control)"
                )


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
        _refuse_control_characters(locals())  # (the parameters alone, as given)
        from rerank_eval.evaluation.measures import canonical_measures
        from rerank_eval.first_stage import RunLocation
        from rerank_eval.pipeline.plan import CandidateOrder, RunPlan
        from rerank_eval.reporting.render.terminal import terminal_table
        from rerank_eval.reporting.report import Report, results_table
        from rerank_eval.rerankers import load_reranker
        from rerank_eval.rerankers.identify import model_family
        from rerank_eval.results.folder import load_result
        from rerank_eval.runtime.distributed import default_device

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
        for name in model_names:  # every model's family known (and agreeing) before any work
            model_family(name, cfg, family, trust_remote_code)

        def load(name: str):
            return load_reranker(
                name, device=device or default_device(), dtype=dtype, family=family, config=cfg,
                trust_remote_code=trust_remote_code, **settings,
            )  # fmt: skip

        folders, chosen = _published(plan, model_names, load, out, suite_name, fresh)
        if not folders:
            return  # a torchrun rank other than 0: rank 0 reports
        reports = [Report(saved.manifest, saved.per_query) for saved in map(load_result, folders)]
        console.print(terminal_table(results_table(reports)))
        console.print(f"results: {chosen}")

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


def _published(
    plan: RunPlan,
    models: list[str],
    load: Callable[[str], Reranker],
    out: Path | None,
    suite: str,
    fresh: bool,
) -> tuple[list[Path], Path]:
    """The models' published folders, and the result folder they are in: `out`, or a default one,
    which finishes the folder a stopped run of this command left (not a fresh run's: it scores
    again, in a folder of its own), or is a new one where that folder's results are no longer what
    the command's inputs give."""
    from rerank_eval.pipeline.execute import execute_models
    from rerank_eval.results.folder import HoldsOtherResults

    chosen: list[Path] = []  # the result folder of each try

    def run_in(finishing: Sequence[str]) -> list[Path]:
        """What was published (`finishing`: the command line whose stopped run to finish)."""
        with result_folder(out, models, suite, finishing) as destination:
            chosen.append(destination)
            return execute_models(plan, models, load, destination, sys.argv)

    try:
        return run_in(() if fresh else sys.argv), chosen[-1]
    except HoldsOtherResults:
        if out is not None:
            raise
        print(
            f"note: {chosen[-1]} holds results of this command that its inputs no longer give "
            "(they changed since its run stopped); this run writes a folder of its own",
            file=sys.stderr,
        )
    # (out of the except block, whose traceback would keep the first try's model in memory)
    return run_in(()), chosen[-1]


def _resume_command() -> str:
    """The command that resumes this run: the same minus --fresh, which would throw the journaled
    scores away; under torchrun, the same torchrun command around it."""
    command = shlex.join(["rerank-eval", *(command_words(sys.argv) or [])])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        without = " without --fresh" if "--fresh" in sys.argv[1:] else ""
        return f"the same torchrun command{without}, running {command}"
    return command
