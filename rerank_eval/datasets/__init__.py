"""Datasets through ir_datasets (`ir_dataset`: queries, judgements, document texts, in library
terms) or in local files (`local`, `local_files`), and what `rerank-eval fetch` downloads ahead of
an offline run (`fetch`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rerank_eval.config.schema import DatasetSpec
    from rerank_eval.datasets.ir_dataset import IrDataset
    from rerank_eval.datasets.local import LocalDataset


def open_dataset(spec: DatasetSpec) -> IrDataset | LocalDataset:
    """The dataset an entry names: local files, or an ir_datasets id."""
    if spec.local is not None:
        from rerank_eval.datasets.local import LocalDataset

        return LocalDataset(spec)
    from rerank_eval.datasets.ir_dataset import IrDataset

    return IrDataset(spec)
