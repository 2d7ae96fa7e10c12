"""`rerank-eval fetch`: fill every cache a run needs, so it can later run without internet."""

from __future__ import annotations

from rerank_eval.bm25 import Bm25Index, Bm25Settings
from rerank_eval.config import BenchmarkConfig, DatasetSpec
from rerank_eval.data import IrDataset
from rerank_eval.hub import hub_file
from rerank_eval.progress import stderr_console


def fetch_dataset(config: BenchmarkConfig, spec: DatasetSpec) -> None:
    """Queries, qrels, the built doc store and the default first stage of one dataset."""
    dataset = IrDataset(spec)
    dataset.queries()
    dataset.qrels()
    dataset.documents([])  # builds ir_datasets' doc store (announced) if it is not built yet
    source = config.first_stage(spec.first_stage)
    if source.kind == "hub":
        hub_file(
            source.repo,
            spec.run_file or source.file.format(name=spec.run_name or spec.key),
            repo_type=source.repo_type,
        )
    else:
        Bm25Index.open(dataset, Bm25Settings(language=spec.language, k1=source.k1, b=source.b))


def fetch_suite(config: BenchmarkConfig, datasets: list[DatasetSpec], models: list[str]) -> None:
    for spec in datasets:
        stderr_console.print(f"fetching {spec.key} ({spec.ir_datasets_id})", highlight=False)
        fetch_dataset(config, spec)
    for name in models:
        preset = config.models.get(name)
        source = preset.model if preset else name
        if source is None:
            continue  # a preset without model files (bm25)
        from rerank_eval.rerankers.checkpoint import resolve_checkpoint

        stderr_console.print(f"fetching model {source}", highlight=False)
        resolve_checkpoint(source)
    stderr_console.print("all files are in their caches", highlight=False)
