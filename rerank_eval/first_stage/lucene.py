"""`kind: lucene`: the reference BM25, Lucene through Pyserini's Anserini jar (the `lucene` extra).

The published BM25 figures of BEIR and MIRACL are Lucene runs made with Pyserini: k1 0.9, b 0.4,
title and text in one field ("flat"), BEIR with Anserini's default English analyzer (Porter
stemming, Lucene's stopwords), MIRACL with Lucene's analyzer for the language (`-language xx`;
Yoruba, which has none, whitespace-tokenized). This kind indexes the dataset's own corpus the
same way, streamed from `ir_datasets` (or local files) in batches into Anserini's multi-threaded
indexer, and searches it with the same analyzer.

The index is on disk and memory-mapped by Lucene, so a corpus needs disk, not memory, of its
size. It is cached under a key of the corpus, its text, the fields, the analyzer and the
Pyserini/Anserini versions; it is built in a folder of its own and renamed into place when
complete, so an index a kill interrupted is never found, let alone trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rerank_eval.cache import cache_root, disk_error
from rerank_eval.errors import UserError
from rerank_eval.first_stage import lucene_runtime
from rerank_eval.first_stage.base import FirstStageKind, FirstStageRecord, FirstStageRequest, Setting
from rerank_eval.first_stage.registry import register
from rerank_eval.paths import file_name
from rerank_eval.runfiles import Run

#: documents handed to Anserini's indexer per call (its threads share each batch)
BATCH = 10_000
#: languages searched whitespace-tokenized, as Pyserini's MIRACL runs (`--pretokenized`)
WHITESPACE_LANGUAGES = ("yo",)
INDEX_FORMAT = 1


@dataclass(frozen=True)
class LuceneSettings:
    """Everything that decides the index and the scores."""

    k1: float
    b: float
    language: str
    analyzer: str  # "language" (Lucene's analyzer for it; English: Anserini's default) or "whitespace"
    #: "flat": title and text in one field (`contents`); "multifield": the title in a field of its
    #: own, searched with the same weight as the text (Pyserini's `--fields contents=1.0 title=1.0`)
    fields: str = "flat"

    def indexer_args(self) -> list[str]:
        args = ["-fields", "title"] if self.fields == "multifield" else []
        if self.analyzer == "whitespace":
            return [*args, "-pretokenized"]
        return args if self.language == "en" else [*args, "-language", self.language]

    def record(self, doc_id: str, title: str, text: str) -> str:
        """A document as the indexer's JSON line."""
        from rerank_eval.datasets.ir_dataset import join_fields

        if self.fields == "multifield":
            return json.dumps({"id": doc_id, "contents": text, "title": title}, ensure_ascii=False)
        return json.dumps({"id": doc_id, "contents": join_fields(title, text)}, ensure_ascii=False)

    def describe(self) -> dict[str, Any]:
        return {
            "k1": self.k1, "b": self.b, "fields": self.fields, "language": self.language,
            "analyzer": self.analyzer, "indexer_args": self.indexer_args(), **lucene_runtime.versions(),
        }  # fmt: skip


class Lucene(FirstStageKind):
    name = "lucene"
    downloads = False  # it indexes the dataset's own corpus
    settings: ClassVar[dict[str, Setting]] = {
        "k1": Setting(float, 0.9, bounds=(0.0, 100.0)),
        "b": Setting(float, 0.4, bounds=(0.0, 1.0)),
        # "auto": the dataset's language (whitespace for those Pyserini searches pretokenized)
        "analyzer": Setting(str, "auto", choices=("auto", "language", "whitespace")),
        "fields": Setting(str, "flat", choices=("flat", "multifield")),
    }

    def available(self) -> bool:
        """The `lucene` extra is installed."""
        return lucene_runtime.available()

    @staticmethod
    def _settings(request: FirstStageRequest) -> LuceneSettings:
        values = request.source.settings
        language = request.spec.language
        analyzer = values["analyzer"]
        if analyzer == "auto":
            analyzer = "whitespace" if language in WHITESPACE_LANGUAGES else "language"
        return LuceneSettings(values["k1"], values["b"], language, analyzer, values["fields"])

    def fetch(self, request: FirstStageRequest, build: bool = True) -> None:
        index_folder(request.dataset, self._settings(request))

    def obtain(self, request: FirstStageRequest) -> tuple[Run, FirstStageRecord]:
        settings = self._settings(request)
        run = search(index_folder(request.dataset, settings), settings, request.queries, request.depth)
        reference_name, reference = request.reference()
        record = FirstStageRecord(
            kind=self.name,
            label=request.source.label,
            settings=settings.describe(),
            reference_name=reference_name,
            reference_ndcg10=reference,
        )
        return run, record


def index_folder(dataset: Any, settings: LuceneSettings) -> Path:
    """The cached index of the dataset's corpus, built first if there is none."""
    from rerank_eval.datasets.ir_dataset import DOCUMENT_TEXT

    key = {
        "format": INDEX_FORMAT,
        "corpus": dataset.corpus_id(),
        "document_text": DOCUMENT_TEXT,
        "indexer_args": settings.indexer_args(),
        **lucene_runtime.versions(),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_root() / "lucene" / f"{file_name(dataset.corpus_id())}-{digest}"
    if not folder.is_dir():
        _build(dataset, settings, folder)
    return folder


def _build(dataset: Any, settings: LuceneSettings, folder: Path) -> None:
    from rerank_eval.pipeline.progress import track

    classes = lucene_runtime.anserini()
    if settings.analyzer == "language":
        lucene_runtime.check_language(settings.language)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f"{folder.name}.building-"))
    except OSError as exc:
        raise disk_error(exc, folder, "nothing was built") from None
    print(f"building the Lucene index of {dataset.id} (once; cached in {folder})", file=sys.stderr)
    threads = str(os.cpu_count() or 1)
    args = ["-index", str(building), "-input", "", "-collection", "JsonCollection", "-threads", threads]
    try:
        indexer = classes.SimpleIndexer([*args, *settings.indexer_args()])
        batch: list[str] = []
        count = 0
        documents = dataset.iter_fields()
        for doc_id, title, text in track(documents, dataset.documents_count() or 0, f"indexing {dataset.id}"):
            batch.append(settings.record(doc_id, title, text))
            if len(batch) == BATCH:
                indexer.addRawDocuments(batch)
                count, batch = count + len(batch), []
        if batch:
            indexer.addRawDocuments(batch)
            count += len(batch)
        indexer.close()
        if not count:
            raise UserError(f"{dataset.id} has no documents to index")
        _check_complete(classes, building, count, dataset.id)
        os.replace(building, folder)
    except OSError as exc:
        shutil.rmtree(building, ignore_errors=True)
        if not folder.is_dir():  # not another process completing it first
            raise disk_error(exc, folder, "nothing of the index was kept") from None
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def _check_complete(classes: Any, building: Path, expected: int, dataset_id: str) -> None:
    """Anserini's indexer threads log a document they fail on and go on; an index missing
    documents would give wrong figures, so it is never kept."""
    searcher = classes.SimpleSearcher(str(building))
    try:
        indexed = searcher.get_total_num_docs()
    finally:
        searcher.close()
    if indexed != expected:
        raise UserError(
            f"Lucene indexed {indexed:,} of the {expected:,} documents of {dataset_id}; nothing was kept "
            f"(Anserini's error lines above say why)"
        )


def search(folder: Path, settings: LuceneSettings, queries: dict[str, str], k: int) -> Run:
    """Lucene's top-k per query (BM25 with the settings' k1, b and query analyzer), real scores."""
    classes = lucene_runtime.anserini()
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
