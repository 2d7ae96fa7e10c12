"""`kind: lucene`: the reference BM25, Lucene through Pyserini's Anserini jar (the `lucene` extra).

The published BM25 figures of BEIR and MIRACL are Lucene runs made with Pyserini: k1 0.9, b 0.4,
title and text in one field ("flat"; BEIR also publishes "multifield"), BEIR with Anserini's
default English analyzer (Porter stemming, Lucene's stopwords), MIRACL with Lucene's analyzer for
the language (`-language xx`; Yoruba, which has none, pretokenized; Swahili, which has none either,
whitespace-tokenized by Anserini's own rule). This kind indexes the
dataset's own corpus the same way (`lucene_index`) and searches it with the same analyzer. The
index is on disk and memory-mapped by Lucene, so a corpus needs disk, not memory, of its size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rerank_eval.first_stage import lucene_runtime
from rerank_eval.first_stage.base import (
    BM25_SETTINGS,
    FirstStageKind,
    FirstStageRecord,
    FirstStageRequest,
    Setting,
)
from rerank_eval.first_stage.lucene_index import LuceneSettings, index_folder, index_stats
from rerank_eval.first_stage.registry import register
from rerank_eval.runfiles import Run

if TYPE_CHECKING:
    from rerank_eval.config.schema import DatasetSpec, FirstStageSpec


class Lucene(FirstStageKind):
    name = "lucene"
    downloads = False  # it indexes the dataset's own corpus
    settings: ClassVar[dict[str, Setting]] = {
        **BM25_SETTINGS,
        # "auto": the dataset's language (whitespace for those Pyserini searches pretokenized)
        "analyzer": Setting(str, "auto", choices=("auto", "language", "whitespace")),
        "fields": Setting(str, "flat", choices=("flat", "multifield")),
    }

    requirement = f"Pyserini and a Java runtime ({lucene_runtime.INSTALL})"

    def available(self) -> bool:
        """The `lucene` extra is installed."""
        return lucene_runtime.available()

    def preflight(self, spec: DatasetSpec, source: FirstStageSpec) -> None:
        """Before any work: the extra, a Java 21+, and the analyzer this runtime can run."""
        if not self.available():
            raise lucene_runtime.missing_extra()
        settings = lucene_settings(spec.language, source.settings)
        if settings.analyzer == "language":
            lucene_runtime.check_language(settings.language)

    def fetch(self, request: FirstStageRequest, build: bool = True) -> None:
        index_folder(request.dataset, lucene_settings(request.spec.language, request.source.settings))

    def obtain(self, request: FirstStageRequest) -> tuple[Run, FirstStageRecord]:
        settings = lucene_settings(request.spec.language, request.source.settings)
        folder = index_folder(request.dataset, settings)
        run = search(folder, settings, request.queries, request.depth)
        return run, FirstStageRecord(
            kind=self.name,
            label=request.source.label,
            settings=settings.describe(),
            **request.reference_fields(),
            execution={"index": index_stats(folder), "java": lucene_runtime.java_version()},
        )


def lucene_settings(language: str, values: dict) -> LuceneSettings:
    analyzer = values["analyzer"]
    if analyzer == "auto":
        analyzer = "whitespace" if language in lucene_runtime.PRETOKENIZED_LANGUAGES else "language"
    return LuceneSettings(values["k1"], values["b"], language, analyzer, values["fields"])


def search(folder: Path, settings: LuceneSettings, queries: dict[str, str], k: int) -> Run:
    """Lucene's top-k per query (BM25 with the settings' k1, b and query analyzer), real scores."""
    classes = lucene_runtime.anserini()
    if settings.analyzer == "language":  # an index built under another Java may be searched here
        lucene_runtime.check_language(settings.language)
    with lucene_runtime.java_errors(f"searching the Lucene index {folder}"):
        searcher = classes.SimpleSearcher(str(folder))
        try:
            searcher.set_bm25(float(settings.k1), float(settings.b))
            if settings.analyzer == "whitespace":
                searcher.set_analyzer(classes.WhitespaceAnalyzer())
            elif settings.language != "en":
                searcher.set_language(settings.language)
            texts, ids = classes.ArrayList(), classes.ArrayList()
            for query_id, text in queries.items():
                texts.add(text)
                ids.add(query_id)
            threads = int(os.cpu_count() or 1)
            if settings.fields == "multifield":
                weights = classes.HashMap()
                for field_name in ("contents", "title"):
                    weights.put(field_name, classes.Float(1.0))
                found = searcher.batch_search_fields(texts, ids, int(k), threads, weights)
            else:
                found = searcher.batch_search(texts, ids, int(k), threads)
            run: Run = {query_id: {} for query_id in queries}
            for entry in found.entrySet().toArray():
                run[entry.getKey()] = {hit.docid: float(hit.score) for hit in entry.getValue()}
            return run
        finally:
            searcher.close()


register(Lucene())
