"""`rerank-eval fetch`: fill every cache a run needs, so it can later run without internet."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from rerank_eval.config.schema import BenchmarkConfig, DatasetSpec
from rerank_eval.datasets import open_dataset
from rerank_eval.first_stage import CandidatePolicy, FirstStageRequest, fetch_first_stage, kind
from rerank_eval.runtime.progress import stderr_console


def fetch_dataset(
    config: BenchmarkConfig,
    spec: DatasetSpec,
    first_stage: str | None = None,
    with_first_stage: bool = True,
    first_stage_settings: Mapping[str, Any] | None = None,
    encode: bool = True,
) -> None:
    """Queries, qrels, the built doc store and (unless the run brings its own run file) the first
    stage (default: the dataset's own; `first_stage_settings` replace some of `first_stage`'s) of
    one dataset: a published run downloaded, a BM25 index built, a corpus encoded (unless not
    `encode`: then only its encoder is downloaded)."""
    dataset = open_dataset(spec)
    queries = dataset.queries()
    dataset.qrels()
    dataset.documents([])  # builds ir_datasets' doc store (announced) if it is not built yet
    if not with_first_stage:
        return
    source = config.first_stage_for(spec, first_stage, first_stage_settings)  # (checked by fetch_suite)
    depth = CandidatePolicy(config.top_k, spec.drop_self_matches).depth  # as a run will ask
    fetch_first_stage(FirstStageRequest(spec, source, dataset, queries, depth), build=encode)


def fetch_suite(
    config: BenchmarkConfig,
    datasets: list[DatasetSpec],
    models: list[str],
    first_stage: str | None = None,
    with_first_stage: bool = True,
    first_stage_settings: Mapping[str, Any] | None = None,
    encode: bool = True,
) -> None:
    from rerank_eval.rerankers import model_files

    for name in models:  # first: a mistyped or unreachable model is said before hours of encoding
        checkpoint = model_files(name, config)
        if checkpoint is not None:
            stderr_console.print(f"model {name}: {checkpoint.source}", highlight=False, soft_wrap=True)
    # a dataset that names no first stage is run on the user's own run file (--run): its data only
    own_run = {spec.key for spec in datasets if spec.first_stage is None and first_stage is None}
    if with_first_stage:
        retrieved = [spec for spec in datasets if spec.key not in own_run]
        fetch_first_stage_models(config, retrieved, first_stage, first_stage_settings)
    for spec in datasets:
        stderr_console.print(f"fetching {spec.key} ({spec.origin})", highlight=False)
        if with_first_stage and spec.key in own_run:
            print(f"{spec.key}: it names no first stage, so its run file comes with the run", file=sys.stderr)
        retrieve = with_first_stage and spec.key not in own_run
        fetch_dataset(config, spec, first_stage, retrieve, first_stage_settings, encode)
    # one line whatever the width: paths to copy are not broken
    stderr_console.print(f"all files are in their caches: {cache_folders()}", highlight=False, soft_wrap=True)


def fetch_first_stage_models(
    config: BenchmarkConfig,
    datasets: list[DatasetSpec],
    first_stage: str | None,
    first_stage_settings: Mapping[str, Any] | None,
) -> None:
    """Each dataset's first stage checked (as a run checks them), and the model of each first stage
    the datasets use (an encoder) downloaded once, before any dataset, as the rerankers are: a
    mistyped or unreachable encoder, or a first stage that cannot run on a later dataset, is said
    before hours of fetching corpora."""
    seen: set[str] = set()
    for spec in datasets:
        source = config.first_stage_for(spec, first_stage, first_stage_settings)
        chosen = kind(source.kind)
        chosen.preflight(spec, source)
        identity = json.dumps([source.name, source.settings], sort_keys=True, default=str)
        if identity in seen:
            continue
        seen.add(identity)
        where = chosen.fetch_model(source)
        if where is not None:
            message = f"first stage {source.name}: {where}"
            stderr_console.print(message, highlight=False, soft_wrap=True)


def cache_folders() -> str:
    """The folders a machine without internet needs copies of, each with its variable."""
    from rerank_eval.cache import caches

    listed = "; ".join(f"{variable} {folder} ({what})" for variable, folder, what in caches())
    return f"{listed}. Copy these to the machine without internet (or point the variables at the copies)"
