"""The built-in BM25 first stage: `bm25s` (Lucene variant), its index cached on disk.

The index is built once per (dataset, analyzer, parameters) from the ir_datasets corpus and reused
from the cache afterwards. Retrieval computes each query's scores with bm25s and keeps the top-k
in trec_eval's order (score descending, doc id descending), so ties are broken deterministically.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rerank_eval.cache import cache_root
from rerank_eval.data import IrDataset
from rerank_eval.progress import stderr_console
from rerank_eval.runfiles import Run, trec_order

# Snowball stemmer names (PyStemmer) and bm25s stopword lists, by ISO language code. Languages
# not listed are lower-cased and split with bm25s' default pattern only; the multilingual
# analyzer is tracked separately.
STEMMERS = {"en": "english"}
STOPWORDS = {"en": "en"}


@dataclass(frozen=True)
class Bm25Settings:
    language: str
    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"

    @property
    def stemmer(self) -> str | None:
        return STEMMERS.get(self.language)

    @property
    def stopwords(self) -> str | None:
        return STOPWORDS.get(self.language)

    def describe(self) -> dict[str, object]:
        import bm25s

        return {
            "implementation": f"bm25s {bm25s.__version__}",
            "method": self.method,
            "k1": self.k1,
            "b": self.b,
            "stemmer": self.stemmer,
            "stopwords": self.stopwords,
        }


def _tokenize(texts: list[str], settings: Bm25Settings) -> list[list[str]]:
    import bm25s

    stemmer = None
    if settings.stemmer:
        import Stemmer

        stemmer = Stemmer.Stemmer(settings.stemmer)
    return bm25s.tokenize(
        texts,
        stopwords=settings.stopwords,
        stemmer=stemmer,
        return_ids=False,
        show_progress=False,
    )


class Bm25Index:
    """A bm25s index of one dataset's corpus, with the doc id of every indexed position."""

    def __init__(self, retriever: object, doc_ids: list[str], settings: Bm25Settings) -> None:
        self.retriever = retriever
        self.doc_ids = doc_ids
        self.settings = settings

    @staticmethod
    def cache_dir(dataset: IrDataset, settings: Bm25Settings) -> Path:
        key = json.dumps({"dataset": dataset.id, **settings.describe()}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return cache_root() / "bm25s" / f"{dataset.id.replace('/', '_')}-{digest}"

    @classmethod
    def open(cls, dataset: IrDataset, settings: Bm25Settings) -> Bm25Index:
        """Load the cached index, building it first if this dataset was never indexed."""
        import bm25s

        folder = cls.cache_dir(dataset, settings)
        if not (folder / "doc_ids.json").exists():
            cls._build(dataset, settings, folder)
        retriever = bm25s.BM25.load(str(folder), mmap=True)
        doc_ids = json.loads((folder / "doc_ids.json").read_text(encoding="utf-8"))
        return cls(retriever, doc_ids, settings)

    @staticmethod
    def _build(dataset: IrDataset, settings: Bm25Settings, folder: Path) -> None:
        import bm25s

        print(f"building the BM25 index of {dataset.id} (once; cached in {folder})", file=sys.stderr)
        doc_ids: list[str] = []
        texts: list[str] = []
        for doc_id, text in dataset.iter_documents():
            doc_ids.append(doc_id)
            texts.append(text)
        retriever = bm25s.BM25(k1=settings.k1, b=settings.b, method=settings.method)
        retriever.index(_tokenize(texts, settings), show_progress=stderr_console.is_terminal)
        staging = folder.with_name(folder.name + ".building")
        shutil.rmtree(staging, ignore_errors=True)
        retriever.save(str(staging))
        (staging / "doc_ids.json").write_text(json.dumps(doc_ids), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)

    def search(self, queries: dict[str, str], k: int) -> Run:
        """Top-k documents with a positive score per query, in trec_eval order."""
        query_ids = list(queries)
        tokenized = _tokenize([queries[q] for q in query_ids], self.settings)
        run: Run = {}
        for query_id, tokens in zip(query_ids, tokenized):
            token_ids = self.retriever.get_tokens_ids(tokens)
            if not token_ids:
                run[query_id] = {}
                continue
            scores = self.retriever.get_scores_from_ids(token_ids)
            matching = np.flatnonzero(scores > 0)
            # Keep a margin beyond k so that ties at the boundary are resolved by doc id.
            if len(matching) > k:
                cutoff = np.partition(scores[matching], len(matching) - k)[len(matching) - k]
                matching = matching[scores[matching] >= cutoff]
            docs = {self.doc_ids[i]: float(scores[i]) for i in matching}
            run[query_id] = dict(trec_order(docs)[:k])
        return run
