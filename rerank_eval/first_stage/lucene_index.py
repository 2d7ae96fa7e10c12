"""A dataset's Lucene index, built as Pyserini builds its own and cached on disk.

The corpus is streamed (from `ir_datasets` or local files) in batches into Anserini's
multi-threaded `SimpleIndexer`. The index is cached under a key of the corpus, its text, the
indexer's arguments and the Pyserini/Anserini versions; it is built in a folder of its own and
renamed into place only when complete, so one that a kill interrupted is never found (and the
next build on its host removes it).

Anserini leaves out a document whose indexed text is empty (Java's `trim()`, as Pyserini's own
indexes do: its BEIR trec-covid index holds 171,331 of 171,332 documents); those are counted as
they stream past, and any other shortfall means documents were lost, so the index is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerank_eval.cache import build_in_place, building_claim, cache_root, remove_left_by_killed_builds
from rerank_eval.errors import UserError
from rerank_eval.first_stage import lucene_runtime
from rerank_eval.paths import file_name

#: documents handed to Anserini's indexer per call (its threads share each batch)
BATCH = 10_000
INDEX_FORMAT = 1
#: what the index folder says about itself (documents streamed, indexed, left out empty)
STATS_FILE = "rerank-eval-index.json"
#: the characters Java's String.trim() removes: an indexed text of only these is left out
_JAVA_TRIMMED = "".join(chr(code) for code in range(0x21))


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

    def indexed_text(self, title: str, text: str) -> str:
        """What goes into the `contents` field."""
        from rerank_eval.datasets.ir_dataset import join_fields

        return text if self.fields == "multifield" else join_fields(title, text)

    def record(self, doc_id: str, title: str, text: str) -> str:
        """A document as the indexer's JSON line."""
        fields = {"id": doc_id, "contents": self.indexed_text(title, text)}
        if self.fields == "multifield":
            fields["title"] = title
        return json.dumps(fields, ensure_ascii=False)

    def describe(self) -> dict[str, Any]:
        """For the manifest: the settings, the analyzer Anserini really uses, the versions."""
        used = lucene_runtime.analyzer_used(self.language, self.analyzer)
        return {
            "k1": self.k1, "b": self.b, "fields": self.fields, "language": self.language,
            "analyzer": self.analyzer, "analyzer_used": used, "indexer_args": self.indexer_args(),
            **lucene_runtime.versions(),
        }  # fmt: skip


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
    remove_left_by_killed_builds(folder)
    if not folder.is_dir():
        with building_claim(folder, f"the Lucene index of {dataset.id}") as needed:
            if needed:
                _build(dataset, settings, folder)
    return folder


def index_stats(folder: Path) -> dict[str, int]:
    return json.loads((folder / STATS_FILE).read_text(encoding="utf-8"))


def _build(dataset: Any, settings: LuceneSettings, folder: Path) -> None:
    classes = lucene_runtime.anserini()
    if settings.analyzer == "language":
        lucene_runtime.check_language(settings.language)
    print(f"building the Lucene index of {dataset.id} (once; cached in {folder})", file=sys.stderr)

    def build(building: Path) -> None:
        with lucene_runtime.java_errors(f"building the Lucene index of {dataset.id}"):
            stats = _index(classes, dataset, settings, building)
            if not stats["documents"]:
                raise UserError(f"{dataset.id} has no documents to index")
            indexed = _count(classes, building)
        expected = stats["documents"] - stats["empty_not_indexed"]
        if indexed != expected:
            raise UserError(
                f"Lucene indexed {indexed:,} of the {expected:,} non-empty documents of {dataset.id}; "
                f"nothing was kept (Anserini's log lines above may say why)"
            )
        # the Java that analyzed the documents (Thai's word breaking is the JDK's own): an index
        # copied to a machine with another Java is searched there, and the manifest shows both
        built = {**stats, "indexed": indexed, "java": lucene_runtime.java_version()}
        (building / STATS_FILE).write_text(json.dumps(built), encoding="utf-8")

    build_in_place(folder, build, "index")


def _index(classes: Any, dataset: Any, settings: LuceneSettings, building: Path) -> dict[str, int]:
    """Stream the corpus into Anserini's indexer; the documents seen and those left empty."""
    from rerank_eval.runtime.progress import track

    threads = str(os.cpu_count() or 1)
    args = ["-index", str(building), "-input", "", "-collection", "JsonCollection", "-threads", threads]
    indexer = classes.SimpleIndexer([*args, *settings.indexer_args()])
    batch: list[str] = []
    documents = empty = 0
    stream = track(dataset.iter_fields(), dataset.documents_count() or 0, f"indexing {dataset.id}")
    for doc_id, title, text in stream:
        empty += not settings.indexed_text(title, text).strip(_JAVA_TRIMMED)
        batch.append(settings.record(doc_id, title, text))
        if len(batch) == BATCH:
            indexer.addRawDocuments(batch)
            documents, batch = documents + len(batch), []
    if batch:
        indexer.addRawDocuments(batch)
        documents += len(batch)
    indexer.close()
    return {"documents": documents, "empty_not_indexed": empty}


def _count(classes: Any, folder: Path) -> int:
    searcher = classes.SimpleSearcher(str(folder))
    try:
        return searcher.get_total_num_docs()
    finally:
        searcher.close()
