"""Queries, relevance judgements and documents, read through `ir_datasets` only.

Candidate documents are looked up by id in ir_datasets' doc store (many at once), never by walking
a whole corpus; only the built-in BM25 index streams the corpus, once, through `iter_documents`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rerank_eval.config import DatasetSpec
from rerank_eval.errors import UserError, describe

# ir_datasets built its lz4 doc store at 88k documents/s from a 500k-document synthetic corpus of
# NQ-like lengths on a 2-core machine (README, "First use of big corpora"); real texts are longer,
# so announcements assume a little less. Used only to tell the user the one-time cost up front.
DOCSTORE_BUILD_DOCS_PER_SECOND = 70_000


def ir_datasets_home() -> Path:
    return Path(os.environ.get("IR_DATASETS_HOME", Path.home() / ".ir_datasets"))


#: how a document becomes one text; part of every cache key built from texts
DOCUMENT_TEXT = "title + ' ' + text where the title is not empty, else text (BEIR's convention)"


def document_text(doc: Any) -> str:
    """BEIR's convention: `title + " " + text` when the document has a non-empty title.

    Fields are read by name because BEIR tuples are (doc_id, text, title, ...) while MIRACL's are
    (doc_id, title, text), and fiqa, quora and msmarco have no title attribute at all.
    """
    title = getattr(doc, "title", None)
    text = getattr(doc, "text", "") or ""
    return f"{title} {text}" if title else text


@contextlib.contextmanager
def _download_errors_explained(dataset_id: str) -> Iterator[None]:
    """Turn ir_datasets' download failures into one line that says how to get the files."""
    try:
        yield
    except OSError as exc:
        if "Connection" in type(exc).__name__:
            reason = "its download host cannot be reached"
        else:
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
        raise UserError(
            f"cannot obtain {dataset_id} through ir_datasets ({reason}); on a machine "
            f"without internet run `rerank-eval fetch` where there is internet and copy "
            f"{ir_datasets_home()} here (or point IR_DATASETS_HOME at a copy)"
        ) from None


@contextlib.contextmanager
def _damaged_files_explained(dataset_id: str) -> Iterator[None]:
    """A corpus file that is there but cannot be parsed (cut short, corrupt) fails inside
    ir_datasets' parsers in many ways; say so in one line, naming where the files are."""
    try:
        yield
    except (OSError, UserError):
        raise  # a download failure is explained by `_download_errors_explained`
    except Exception as exc:
        raise UserError(
            f"cannot read the corpus of {dataset_id} ({describe(exc)}); its files under "
            f"{ir_datasets_home()} may be damaged or incomplete"
        ) from None


class IrDataset:
    """One ir_datasets dataset: its queries, qrels and a doc store for candidate lookup."""

    def __init__(self, spec: DatasetSpec) -> None:
        import ir_datasets

        self.spec = spec
        self.id = spec.ir_datasets_id
        try:
            self._dataset = ir_datasets.load(self.id)
        except KeyError:
            raise UserError(f"ir_datasets has no dataset {self.id!r} (dataset {spec.key})") from None

    def queries(self) -> dict[str, str]:
        with _download_errors_explained(self.id):
            return {q.query_id: q.text for q in self._dataset.queries_iter()}

    def qrels(self) -> dict[str, dict[str, int]]:
        qrels: dict[str, dict[str, int]] = {}
        with _download_errors_explained(self.id):
            for qrel in self._dataset.qrels_iter():
                qrels.setdefault(qrel.query_id, {})[qrel.doc_id] = int(qrel.relevance)
        return qrels

    def documents(self, doc_ids: Iterable[str]) -> dict[str, str]:
        """Texts of the given documents; ids absent from the corpus are absent from the result."""
        with _download_errors_explained(self.id):
            store = self._dataset.docs_store()
            self._announce_docstore_build(store)
            found = store.get_many(list(doc_ids))
        return {doc_id: document_text(doc) for doc_id, doc in found.items()}

    def iter_documents(self) -> Iterator[tuple[str, str]]:
        with _download_errors_explained(self.id), _damaged_files_explained(self.id):
            for doc in self._dataset.docs_iter():
                yield doc.doc_id, document_text(doc)

    def corpus_id(self) -> str:
        """The dataset whose documents these are (`miracl/en` for `miracl/en/dev`): datasets that
        share a corpus share what is built from it."""
        import ir_datasets

        try:
            return ir_datasets.docs_parent_id(self.id) or self.id
        except Exception:  # an id ir_datasets cannot place has only its own corpus
            return self.id

    def documents_count(self) -> int | None:
        """The corpus size from ir_datasets' metadata (the real dataset's, not a local copy's)."""
        try:
            return self._dataset.docs_count()
        except Exception:
            return None

    def _announce_docstore_build(self, store: Any) -> None:
        built = getattr(store, "built", None)
        if built is None or built():
            return
        count = self.documents_count()
        if count:
            minutes = count / DOCSTORE_BUILD_DOCS_PER_SECOND / 60
            duration = f"about {minutes:.0f} min" if minutes >= 1 else "under a minute"
            cost = f"{count:,} documents, {duration} and roughly the corpus size on disk"
        else:
            cost = "size unknown"
        print(
            f"first use of {self.id}: ir_datasets builds its document store once ({cost}); "
            f"later runs reuse it from {ir_datasets_home()}",
            file=sys.stderr,
        )
