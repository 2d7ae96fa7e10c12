"""Queries, relevance judgements and documents, read through `ir_datasets` only.

Candidate documents are looked up by id in ir_datasets' doc store (many at once), never by walking
a whole corpus; only the built-in BM25 index streams the corpus, once, through `iter_documents`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rerank_eval.cache import ir_datasets_home
from rerank_eval.config.schema import DatasetSpec
from rerank_eval.datasets.docstore import clear_interrupted_docstore, docstore_lock, lz4_store
from rerank_eval.errors import MissingDownload, UserError, describe

# ir_datasets built its lz4 doc store at 88k documents/s from a 500k-document synthetic corpus of
# NQ-like lengths on a 2-core machine (docs/operations.md, "First use of big corpora"); real texts are longer,
# so announcements assume a little less. Used only to tell the user the one-time cost up front.
DOCSTORE_BUILD_DOCS_PER_SECOND = 70_000


#: how a document becomes one text; part of every cache key built from texts
DOCUMENT_TEXT = "title + ' ' + text where the title is not empty, else text (BEIR's convention)"


def document_fields(doc: Any) -> tuple[str, str]:
    """(title, text), read by name because BEIR tuples are (doc_id, text, title, ...) while
    MIRACL's are (doc_id, title, text), and fiqa, quora and msmarco have no title attribute."""
    return getattr(doc, "title", None) or "", getattr(doc, "text", "") or ""


def join_fields(title: str, text: str) -> str:
    """BEIR's convention: `title + " " + text` when the title is not empty (see DOCUMENT_TEXT)."""
    return f"{title} {text}" if title else text


def document_text(doc: Any) -> str:
    return join_fields(*document_fields(doc))


def quiet_ir_datasets(quiet: bool = True) -> None:
    """ir_datasets logs what it opens and every download retry; our own progress lines say what
    happens, and a failure becomes one line (see `_ir_datasets_errors_explained`), so by default
    only its errors are shown (the CLI's --verbose shows everything). Its one logger is created
    here first, so that its own first use does not set it back to INFO."""
    import logging

    import ir_datasets

    ir_datasets.log.easy().logger().setLevel(logging.ERROR if quiet else logging.INFO)


def _failed_download(exc: BaseException) -> tuple[str | None, str | None]:
    """(the file ir_datasets was downloading, a URL it tried) when `exc` comes from one of its
    downloads, read from the frames of ir_datasets' Download.path; (None, None) otherwise."""
    traceback = exc.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        owner = frame.f_locals.get("self")
        if frame.f_code.co_name == "path" and type(owner).__name__ == "Download":
            mirrors = getattr(owner, "mirrors", [])
            url = next((m.url for m in mirrors if hasattr(m, "url")), None)
            return frame.f_locals.get("download_path"), url
        traceback = traceback.tb_next
    return None, None


def _reason(exc: BaseException) -> str:
    errors = exc.args[1] if isinstance(exc, RuntimeError) and len(exc.args) == 2 else None
    inner = errors[-1][1] if isinstance(errors, list) and errors and isinstance(errors[-1], tuple) else exc
    if "Connection" in type(inner).__name__ or "Resolution" in str(inner):
        return "its download hosts cannot be reached"
    return describe(inner)


def dataset_folder(dataset_id: str) -> Path:
    """The narrowest folder under IR_DATASETS_HOME that holds `dataset_id`'s files: its own where
    there is one (`beir/scifact`), else its collection's shared one (`beir/cqadupstack` for a forum,
    whose archive holds all twelve), never more than it needs (not all of `beir`)."""
    parts = dataset_id.split("/")
    for depth in range(len(parts), 1, -1):
        folder = ir_datasets_home().joinpath(*parts[:depth])
        if folder.is_dir():
            return folder
    return ir_datasets_home() / parts[0]


@contextlib.contextmanager
def _ir_datasets_errors_explained(dataset_id: str, key: str) -> Iterator[None]:
    """Any failure inside ir_datasets, for any dataset, as one line naming the dataset, what is
    missing or damaged, and what to do: a failed download (no internet, a host down) names the file
    ir_datasets wanted; a file that is there but cannot be read (cut short, corrupt) names the
    dataset's folder under IR_DATASETS_HOME."""
    fetch = f"`rerank-eval fetch SUITE --datasets {key}` (SUITE and --config as in the run)"
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        path, url = _failed_download(exc)
        if path is not None or (isinstance(exc, OSError) and "Connection" in type(exc).__name__):
            where = f"put {url.rsplit('/', 1)[-1] if url else 'the file'} at {path}" if path else ""
            raise MissingDownload(
                f"cannot download {dataset_id} through ir_datasets ({_reason(exc)})",
                f"dataset {dataset_id}",
                str(ir_datasets_home()),
                "IR_DATASETS_HOME",
                alternative=where,
            ) from None
        folder = dataset_folder(dataset_id)
        raise UserError(
            f"cannot read {dataset_id} ({describe(exc)}); its files under {folder} may be damaged or "
            f"incomplete: remove them and run {fetch} again"
        ) from None


class IrDataset:
    """One ir_datasets dataset: its queries, qrels and a doc store for candidate lookup."""

    def __init__(self, spec: DatasetSpec) -> None:
        import ir_datasets

        self.spec = spec
        self.id = str(spec.ir_datasets_id)
        try:
            self._dataset = ir_datasets.load(self.id)
        except KeyError:
            raise UserError(f"ir_datasets has no dataset {self.id!r} (dataset {spec.key})") from None

    def identity(self) -> str:
        """What the scores depend on: the id (ir_datasets versions a changed dataset's id)."""
        return self.id

    def record(self) -> dict[str, Any]:
        """Nothing beyond the id for the manifest (a local dataset adds its files' hashes)."""
        return {}

    def _explained(self) -> contextlib.AbstractContextManager[None]:
        return _ir_datasets_errors_explained(self.id, self.spec.key)

    def queries(self) -> dict[str, str]:
        with self._explained():
            return {q.query_id: q.text for q in self._dataset.queries_iter()}

    def qrels(self) -> dict[str, dict[str, int]]:
        qrels: dict[str, dict[str, int]] = {}
        with self._explained():
            for qrel in self._dataset.qrels_iter():
                qrels.setdefault(qrel.query_id, {})[qrel.doc_id] = int(qrel.relevance)
        return qrels

    def documents(self, doc_ids: Iterable[str]) -> dict[str, str]:
        """Texts of the given documents; ids absent from the corpus are absent from the result."""
        with self._explained():
            store = self._docs_store(build=True)
            found = store.get_many(list(doc_ids))
        return {doc_id: document_text(doc) for doc_id, doc in found.items()}

    def iter_documents(self) -> Iterator[tuple[str, str]]:
        for doc_id, title, text in self.iter_fields():
            yield doc_id, join_fields(title, text)

    def iter_fields(self) -> Iterator[tuple[str, str, str]]:
        """(doc id, title, text) of every document, streamed (for indexes that keep fields apart)."""
        with self._explained():
            self._docs_store(build=False)  # ir_datasets iterates a corpus through its doc store once built
            for doc in self._dataset.docs_iter():
                yield doc.doc_id, *document_fields(doc)

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

    def _docs_store(self, build: bool) -> Any:
        """ir_datasets' doc store of this dataset, with what an interrupted build of it left
        cleared, and built (announced first) when `build`; an lz4 store is cleared and built by
        one rerank-eval process at a time."""
        store = self._dataset.docs_store()
        if not lz4_store(store):
            if build:
                self._announce_docstore_build(store)
            return store
        waiting = f"{self.id}: another process is building its document store; waiting for it"
        with docstore_lock(store, waiting):
            cleared = clear_interrupted_docstore(store)
            if cleared is not None:
                print(
                    f"{self.id}: the document store in {cleared} was cut short (an interrupted build)",
                    file=sys.stderr,
                )
            if build:
                self._announce_docstore_build(store)
                store.build()
        return store

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
