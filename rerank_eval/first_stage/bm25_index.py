"""The built-in BM25 first stage: `bm25s` (Lucene variant) over a language-aware analyzer.

The index is built once per (corpus, analyzer, parameters), streaming the corpus document by document:
raw text is analysed document by document and only compact term ids are kept, then bm25s builds
its score matrix, which is saved to rerank-eval's cache and memory-mapped for retrieval. Before a
build starts, its memory need is estimated from the corpus size; a corpus that would not fit is
refused with a pointer to run files instead of thrashing the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rerank_eval.cache import build_in_place, building_claim, cache_root, remove_left_by_killed_builds
from rerank_eval.datasets.ir_dataset import IrDataset
from rerank_eval.errors import UserError, term
from rerank_eval.first_stage.base import BM25_SETTINGS
from rerank_eval.first_stage.text_analysis import Analyzer
from rerank_eval.paths import file_name
from rerank_eval.runfiles import Run, trec_order
from rerank_eval.runtime.progress import stderr_console, track

# Peak memory of a build per corpus document: `rerank-eval bench-index --docs 200000` measured
# 4,064 bytes (interpreter included) on a 2-core machine (docs/protocol.md, "MIRACL"). Used to refuse, before
# starting, builds that would not fit.
BUILD_BYTES_PER_DOCUMENT = 4_064
MEMORY_SHARE = 0.8  # never plan to use more of the available memory than this


@dataclass(frozen=True)
class Bm25Settings:
    language: str
    k1: float = BM25_SETTINGS["k1"].default
    b: float = BM25_SETTINGS["b"].default
    method: str = "lucene"

    @property
    def analyzer(self) -> Analyzer:
        return Analyzer(self.language)

    def describe(self) -> dict[str, object]:
        import bm25s

        return {
            "implementation": f"bm25s {bm25s.__version__}",
            "method": self.method,
            "k1": self.k1,
            "b": self.b,
            "analyzer": self.analyzer.describe(),
        }


class PackedCorpus(Sequence[list[int]]):
    """Documents as term-id lists, stored as one int32 array plus offsets (no Python lists kept)."""

    def __init__(self, terms: np.ndarray, offsets: np.ndarray) -> None:
        self.terms, self.offsets = terms, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index):  # type: ignore[override]
        return self.terms[self.offsets[index] : self.offsets[index + 1]].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for index in range(len(self)):
            yield self[index]


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux MemAvailable, else free pages)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(dataset: IrDataset, language: str) -> None:
    """Refuse, before any work, a build that would not fit in memory."""
    count = dataset.documents_count()
    if not count:
        return
    need, have = count * BUILD_BYTES_PER_DOCUMENT, available_memory()
    if need > MEMORY_SHARE * have:
        raise UserError(
            f"{dataset.id} has {count:,} documents; building the built-in BM25 index needs about "
            f"{need / 2**30:.0f} GiB of memory and {have / 2**30:.0f} GiB are available: supply a "
            f"first-stage run file instead ({term('runs.overrides')} {dataset.spec.key}=PATH; "
            f"docs/protocol.md gives the Pyserini commands for MIRACL {language})",
            {"runs.overrides": "runs.overrides"},
        )


class Bm25Index:
    """A bm25s index of one dataset's corpus, with the doc id of every indexed position."""

    def __init__(self, retriever: object, doc_ids: list[str], settings: Bm25Settings) -> None:
        self.retriever = retriever
        self.doc_ids = doc_ids
        self.settings = settings

    @staticmethod
    def cache_dir(dataset: IrDataset, settings: Bm25Settings) -> Path:
        """Keyed by the corpus (splits of one dataset share an index; a local corpus by its
        content) and every setting that changes the index."""
        key = json.dumps({"corpus": dataset.corpus_id(), **settings.describe()}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return cache_root() / "bm25s" / f"{file_name(dataset.corpus_id())}-{digest}"

    @classmethod
    def is_built(cls, dataset: IrDataset, settings: Bm25Settings) -> bool:
        return (cls.cache_dir(dataset, settings) / "doc_ids.json").exists()

    @classmethod
    def open(cls, dataset: IrDataset, settings: Bm25Settings) -> Bm25Index:
        """Load the cached index, building it first if this dataset was never indexed."""
        import bm25s

        folder = cls.cache_dir(dataset, settings)
        remove_left_by_killed_builds(folder)
        if not cls.is_built(dataset, settings):
            check_memory(dataset, settings.language)
            with building_claim(folder, f"the BM25 index of {dataset.id}") as needed:
                if needed:
                    cls._build(dataset, settings, folder)
        retriever = bm25s.BM25.load(str(folder), mmap=True)
        doc_ids = json.loads((folder / "doc_ids.json").read_text(encoding="utf-8"))
        return cls(retriever, doc_ids, settings)

    @staticmethod
    def _build(dataset: IrDataset, settings: Bm25Settings, folder: Path) -> None:
        import bm25s
        from bm25s.tokenization import Tokenized

        print(f"building the BM25 index of {dataset.id} (once; cached in {folder})", file=sys.stderr)
        analyzer = settings.analyzer
        vocabulary: dict[str, int] = {}
        terms, offsets, doc_ids = array("i"), array("q", [0]), []
        documents = dataset.iter_documents()
        for doc_id, text in track(documents, dataset.documents_count() or 0, f"indexing {dataset.id}"):
            terms.extend(vocabulary.setdefault(term, len(vocabulary)) for term in analyzer(text))
            offsets.append(len(terms))
            doc_ids.append(doc_id)
        if not doc_ids:
            raise UserError(f"{dataset.id} has no documents to index")
        if not vocabulary:  # bm25s cannot index a corpus without a single term
            raise UserError(
                f"{dataset.id}: none of its {len(doc_ids):,} documents has a term to index "
                "(each is empty or stopwords only)"
            )
        corpus = PackedCorpus(np.frombuffer(terms, dtype=np.int32), np.frombuffer(offsets, dtype=np.int64))
        retriever = bm25s.BM25(k1=settings.k1, b=settings.b, method=settings.method)
        retriever.index(Tokenized(ids=corpus, vocab=vocabulary), show_progress=stderr_console.is_terminal)

        def write(building: Path) -> None:  # a folder of this process's own, renamed into place whole
            retriever.save(str(building))
            (building / "doc_ids.json").write_text(json.dumps(doc_ids), encoding="utf-8")

        build_in_place(folder, write, "BM25 index")

    def search(self, queries: dict[str, str], k: int) -> Run:
        """Top-k documents with a positive score per query, in trec_eval order."""
        analyzer = self.settings.analyzer
        run: Run = {}
        for query_id, text in queries.items():
            token_ids = self.retriever.get_tokens_ids(analyzer(text))
            if not token_ids:
                run[query_id] = {}
                continue
            scores = self.retriever.get_scores_from_ids(token_ids)
            matching = np.flatnonzero(scores > 0)
            # Keep every document tied with the k-th so that ties resolve by doc id.
            if len(matching) > k:
                cutoff = np.partition(scores[matching], len(matching) - k)[len(matching) - k]
                matching = matching[scores[matching] >= cutoff]
            docs = {self.doc_ids[i]: float(scores[i]) for i in matching}
            run[query_id] = dict(trec_order(docs)[:k])
        return run
