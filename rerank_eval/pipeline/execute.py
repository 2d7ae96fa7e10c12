"""A benchmark run, end to end: data → first stage → reranking → evaluation → result folder, for
one model (`execute`) or several on the same candidates (`execute_models`)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from rerank_eval.errors import MissingDownload, ParameterError, term, warn
from rerank_eval.evaluation.measures import evaluate_per_query
from rerank_eval.paths import data_file_problem, file_name
from rerank_eval.pipeline.interrupt import STOPPED_AT_ONCE, Interrupted, StopRequest
from rerank_eval.pipeline.manifest import build_manifest, config_files_record, dataset_record
from rerank_eval.pipeline.offline import everything_missing, refuse_what_is_missing
from rerank_eval.pipeline.plan import RunPlan
from rerank_eval.pipeline.prepare import DatasetCache, PreparedDataset
from rerank_eval.pipeline.score import RerankOutcome, rerank_dataset
from rerank_eval.rerankers.base import Reranker
from rerank_eval.results.folder import MANIFEST_LIMIT, HoldsOtherResults, ResultWriter, check_destination
from rerank_eval.results.manifest import command_words
from rerank_eval.results.provenance import source_revision
from rerank_eval.runfiles import Run, format_run_lines, run_tag
from rerank_eval.runtime.distributed import all_gathered_objects, ranks
from rerank_eval.runtime.progress import step


def _per_rank_timings(seconds: float, outcome: RerankOutcome, reranker: Reranker) -> list[dict[str, Any]]:
    """Every rank's reranking time, queries scored and execution record, in rank order (a
    collective: each rank calls it once per dataset); one entry in a single process."""
    own = {
        "rank": ranks().rank,
        "rerank_seconds": round(seconds, 3),
        "scored_queries": outcome.scored_queries,
        "execution": reranker.runtime_stats(),
    }
    return all_gathered_objects(own)


def _warn_about_scoring(key: str, outcome: RerankOutcome, reranker: Reranker) -> None:
    stats = reranker.runtime_stats()
    if outcome.ties and reranker.scores_its_own:
        warn(f"{outcome.ties} reranked scores of {key} tie with the one ranked above; first-stage order kept")
    if stats.get("truncated_documents"):
        warn(f"{stats['truncated_documents']} documents of {key} were cut to the model's length limit")


def run_lines(run: Run, tag: str) -> list[str]:
    lines: list[str] = []
    for query_id, docs in run.items():
        lines += format_run_lines(query_id, docs.items(), tag)
    return lines


def execute(
    plan: RunPlan,
    reranker: Reranker,
    out: Path,
    command: list[str],
    stop: StopRequest,
    datasets: DatasetCache | None = None,
    keep_identical: bool = False,
    position: int | None = None,
) -> Path | None:
    """Run the plan with one reranker and publish the result folder at `out` (on rank 0 only).
    `stop`: the stop request the caller installed (the models of a run share one); `position`: the
    model's place among the several a run was given (None for a run of one)."""
    plan.validate()
    datasets = datasets or DatasetCache(plan)
    started = datetime.now(UTC)
    source_revision()  # (read as the run starts: a commit made while it runs is not what ran)
    main = ranks().is_main
    writer = ResultWriter(out, keep_identical) if main else None
    records = []
    tag = run_tag(reranker.name or reranker.family)
    try:
        for spec in plan.datasets:
            if stop.requested:  # asked during the previous dataset's last forward pass
                raise Interrupted(
                    f"interrupted before {spec.key}; scores journaled so far are kept; to resume: "
                    f"{plan.resume_command}",
                    stop.signum,
                )
            with stop.preparing():
                prepared = datasets.prepared(spec)
            start = time.monotonic()
            outcome = rerank_dataset(reranker, prepared, plan, stop)
            rerank_seconds = time.monotonic() - start
            _warn_about_scoring(spec.key, outcome, reranker)
            per_rank = _per_rank_timings(rerank_seconds, outcome, reranker)  # every rank takes part
            if writer is None:
                continue  # ranks other than 0 only score
            timings = {
                "prepare_seconds": round(prepared.seconds, 3),
                "rerank_seconds": round(rerank_seconds, 3),
            }
            _add_dataset(writer, datasets, prepared, outcome, plan, tag, timings)
            timings["execution"] = per_rank[0]["execution"]  # rank 0's, gathered above
            if len(per_rank) > 1:  # rank 0's own figures above; all ranks' here
                timings["scored_queries"] = sum(rank["scored_queries"] for rank in per_rank)
                timings["ranks"] = per_rank
            records.append(dataset_record(prepared, outcome, timings, reranker))
        if writer is None:
            return None
        finished = datetime.now(UTC)
        manifest = build_manifest(plan, reranker, records, command, started, finished, position)
        folder = writer.publish(manifest, summarize)
        if writer.kept_existing:
            print(f"{out}: the same results as the folder already there, which is kept", file=sys.stderr)
        return folder
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        if isinstance(exc, KeyboardInterrupt):  # a second Ctrl-C, or one while loading
            raise Interrupted(
                f"{STOPPED_AT_ONCE}; to resume: {plan.resume_command}",
                stop.signum,
            ) from None
        raise


def _add_dataset(
    writer: ResultWriter,
    datasets: DatasetCache,
    prepared: PreparedDataset,
    outcome: RerankOutcome,
    plan: RunPlan,
    tag: str,
    timings: dict[str, Any],
) -> None:
    """One dataset's evaluation and files into the result being written: both runs (the reranked
    one, and the candidates as the first stage scored them, after self-matches and the top-k cut),
    the listwise blocks, and the per-query values of both stages; its time goes into `timings`."""
    start = time.monotonic()
    key = prepared.spec.key
    with step(f"{key}: evaluation"):
        first_values = datasets.first_stage_values(prepared)
        reranked_values = evaluate_per_query(prepared.qrels, outcome.run, plan.measures())
    writer.add_run(key, run_lines(outcome.run, tag))
    first_stage_tag = run_tag(prepared.first_stage.name or prepared.first_stage.kind)
    writer.add_run(f"{key}.first-stage", run_lines(prepared.candidates.to_run(), first_stage_tag))
    blocks = {q: notes["blocks"] for q, notes in outcome.notes.items() if "blocks" in notes}
    if blocks:
        writer.add_blocks(key, blocks)
    writer.add_values(key, "first_stage", first_values)
    writer.add_values(key, "reranked", reranked_values)
    timings["evaluate_seconds"] = round(time.monotonic() - start, 3)


def summarize(manifest: dict[str, Any], per_query: pd.DataFrame) -> str:
    """summary.csv: derived from the per-query values, as `rerank-eval export` derives it."""
    from rerank_eval.reporting.render.data import summary_csv
    from rerank_eval.reporting.report import Report
    from rerank_eval.results.manifest import read_manifest

    return summary_csv(Report(read_manifest(manifest, "the manifest being written"), per_query))


def model_folder_name(model: str) -> str:
    """A folder name for a model given by preset, Hub id or path (never one that leaves `--out`)."""
    path = Path(model.rstrip("/"))
    return file_name(path.name if path.exists() else model)


def execute_models(
    plan: RunPlan, models: list[str], load: Callable[[str], Reranker], out: Path, command: list[str]
) -> list[Path]:
    """Rerank the same candidates with each model in turn (data loaded once, one model in memory).

    One model publishes `out`; several publish `out/<model>/` each. Under torchrun only rank 0
    publishes, and the other ranks return no folder.
    """
    plan.validate()
    names = [model_folder_name(m) for m in models]
    if len(set(names)) != len(names):
        raise ParameterError("models", f"names two models with the same folder name: {', '.join(models)}")
    datasets = DatasetCache(plan)
    try:
        refuse_what_is_missing(plan, models)
        return _execute_each(plan, models, names, load, out, command, datasets)
    except MissingDownload as missing:  # say everything that is missing, not only the first
        raise everything_missing(plan, models, missing) from None


def _execute_each(
    plan: RunPlan,
    models: list[str],
    names: list[str],
    load: Callable[[str], Reranker],
    out: Path,
    command: list[str],
    datasets: DatasetCache,
) -> list[Path]:
    """Each model in turn under one stop request: a stop asked for during a model's last forward
    pass lets it publish and starts no other; one while a model loads stops at once."""
    folders = []
    stop = StopRequest()
    with stop:
        for position, (model, name) in enumerate(zip(models, names), start=1):
            if stop.requested:
                raise Interrupted(
                    f"interrupted before model {model} (the models before it are published); to resume: "
                    f"{plan.resume_command}",
                    stop.signum,
                )
            destination = out if len(models) == 1 else out / name
            # A resumed run redoes the models it had published (a several-model run stopped at a
            # later model, or a kill between publishing and exiting), from the journal (no
            # scoring), and keeps their folders when the results come out identical.
            resumed, holds = _earlier_result(destination, command, plan)
            if ranks().is_main:  # (refused before the model loads, which may be a download)
                check_destination(destination, resumed, holds)
            try:
                with stop.preparing():
                    reranker = load(model)
            except KeyboardInterrupt:
                raise Interrupted(
                    f"{STOPPED_AT_ONCE}; to resume: {plan.resume_command}", stop.signum
                ) from None
            if resumed and ranks().is_main:
                _refuse_another_checkpoint(destination, reranker)
            folder = execute(
                plan,
                reranker,
                destination,
                command,
                stop,
                datasets,
                resumed,
                position if len(models) > 1 else None,
            )
            folders += [folder] if folder else []
            del reranker
            _free_accelerator_memory()
    return folders


def _earlier_result(folder: Path, command: list[str], plan: RunPlan) -> tuple[bool, str]:
    """Whether an earlier run of this very command line, over the same config files, published
    this model's folder (a hint only: the folder is kept only if the results come out identical),
    and else what the folder holds, for its refusal. A config file edited since is other results:
    refused before any work, not after it."""
    earlier = _recorded_manifest(folder)
    words = command_words(earlier.get("command"))
    if words is None:
        return False, ""
    if words != command_words(command):
        shown = repr(" ".join(map(str, words)))  # (escaped first: a crafted word grows no longer)
        return False, f"the result of another command ({shown if len(shown) <= 160 else shown[:160] + '...'})"
    if plan.fresh:
        return False, "this command's result (--fresh scores again; it does not replace a result)"
    suite = earlier.get("suite")
    recorded = suite.get("config_files") if isinstance(suite, dict) else None
    if recorded is None:
        return False, "this command's result, whose manifest records no config files"
    if recorded != config_files_record(plan):
        return False, "this command's result over config files changed since"
    return True, ""


#: what in a manifest's model record names the weights it scored with
_CHECKPOINT_IDENTITY = ("family", "source", "revision", "content_sha256")


def _refuse_another_checkpoint(folder: Path, reranker: Reranker) -> None:
    """Refuse, before any scoring, to redo a published model whose checkpoint has changed since
    (retrained in place, another revision): its folder would be refused after the whole run anyway,
    since its results are another model's."""
    earlier = _recorded_manifest(folder).get("model")
    now = reranker.describe()
    changed = [
        key for key in _CHECKPOINT_IDENTITY if isinstance(earlier, dict) and earlier.get(key) != now.get(key)
    ]
    if changed:
        then, since = (repr(record.get(changed[0]))[:80] for record in (earlier, now))
        raise HoldsOtherResults(
            f"result folder {folder} exists already and holds the results of another checkpoint of "
            f"{reranker.name or reranker.family} ({changed[0]} {then} then, {since} now); "
            f"choose another {term('out')}",
            {"out": "folder"},
        )


def written_by_command(folder: Path, command: Sequence[str]) -> bool:
    """Whether the result in `folder` records this command line (a --fresh apart)."""
    return _records_command(_recorded_manifest(folder), command)


def _recorded_manifest(folder: Path) -> dict[str, Any]:
    """The manifest a result folder holds, as written; empty where there is none to read (nor one
    that is no regular file, which could block the read, or is larger than any manifest)."""
    path = folder / "manifest.json"
    if data_file_problem(path, MANIFEST_LIMIT):
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _records_command(manifest: dict[str, Any], command: Sequence[str]) -> bool:
    words = command_words(manifest.get("command"))
    return words is not None and words == command_words(command)


def _free_accelerator_memory() -> None:
    import gc

    from rerank_eval.models.common import release_cached_memory

    gc.collect()
    release_cached_memory()
