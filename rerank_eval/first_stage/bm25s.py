"""`kind: bm25s`: the built-in BM25 (bm25s, Lucene variant) over a language-aware analyzer."""

from __future__ import annotations

from typing import ClassVar

from rerank_eval.config.schema import DatasetSpec, FirstStageSpec
from rerank_eval.datasets.ir_dataset import IrDataset
from rerank_eval.first_stage.base import (
    BM25_SETTINGS,
    FirstStageKind,
    FirstStageRecord,
    FirstStageRequest,
    Setting,
)
from rerank_eval.first_stage.bm25_index import Bm25Index, Bm25Settings, check_memory
from rerank_eval.first_stage.registry import register
from rerank_eval.runfiles import Run


class BuiltInBm25(FirstStageKind):
    name = "bm25s"
    downloads = False  # it indexes the dataset's own corpus
    settings: ClassVar[dict[str, Setting]] = BM25_SETTINGS

    @staticmethod
    def _settings(spec: DatasetSpec, source: FirstStageSpec) -> Bm25Settings:
        values = source.settings
        return Bm25Settings(language=spec.language, k1=values["k1"], b=values["b"])

    def preflight(self, spec: DatasetSpec, source: FirstStageSpec) -> None:
        """Before any work: an index that is not built yet must fit in memory (MIRACL en's would
        need about 124 GiB), so a later dataset is not refused after earlier ones ran."""
        if spec.local is not None:
            return  # a local corpus's size is known only once read
        dataset = IrDataset(spec)
        settings = self._settings(spec, source)
        if not Bm25Index.is_built(dataset, settings):
            check_memory(dataset, settings.language)

    def fetch(self, request: FirstStageRequest, build: bool = True) -> None:
        Bm25Index.open(request.dataset, self._settings(request.spec, request.source))

    def obtain(self, request: FirstStageRequest) -> tuple[Run, FirstStageRecord]:
        settings = self._settings(request.spec, request.source)
        run = Bm25Index.open(request.dataset, settings).search(request.queries, request.depth)
        record = FirstStageRecord(
            kind=self.name,
            label=request.source.label,
            settings=settings.describe(),
            **request.reference_fields(),
        )
        return run, record


register(BuiltInBm25())
