"""A dataset in local files (a BEIR-format folder, or corpus, queries and qrels files), with the
same interface as `IrDataset`, so candidates, self-matches, evaluation and the manifest are
handled exactly as for an ir_datasets id.

Files are identified by their content: the SHA-256 of each goes into the manifest, the score
journal's key and the names of what is built from the corpus (the doc store, a BM25 index, corpus
embeddings), so an edited file is never mistaken for the one scored before, and a moved one is.
Documents are looked up in ir_datasets' own doc store (`PickleLz4FullStore`), built once from a
streaming read of the corpus into a temporary folder and renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import json
import sys
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rerank_eval.cache import build_in_place, building_claim, cache_root, remove_left_by_killed_builds
from rerank_eval.config.schema import DatasetSpec
from rerank_eval.datasets.ir_dataset import document_text
from rerank_eval.datasets.local_files import (
    LOCAL_FORMAT,
    LocalDoc,
    check_readable,
    is_jsonl,
    read_documents,
    read_qrels,
    read_queries,
)
from rerank_eval.errors import UserError, read_within_memory

_CHUNK = 1 << 20


def file_digest(path: Path) -> tuple[str, int]:
    """(SHA-256, number of line ends) of a file, read in chunks."""
    digest, lines = hashlib.sha256(), 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                lines += chunk.count(b"\n")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    return digest.hexdigest(), lines


def _id_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little")


#: repeated id hashes confirmed by one more read of the corpus (a corpus that repeats ids usually
#: repeats many: the first read finds one)
CONFIRMED_PER_READ = 100_000


class LocalDataset:
    """Queries, qrels and documents of one dataset entry that names local files."""

    def __init__(self, spec: DatasetSpec) -> None:
        assert spec.local is not None
        self.spec = spec
        self.id = spec.origin
        self.files = {"corpus": Path(spec.local.corpus), "queries": Path(spec.local.queries),
                      "qrels": Path(spec.local.qrels)}  # fmt: skip
        folder = spec.local.folder
        if folder is not None and not Path(folder).is_dir():
            raise UserError(
                f"dataset {spec.key}: path {folder} is not a folder (a BEIR-format folder holds "
                f"corpus.jsonl, queries.jsonl and qrels/SPLIT.tsv)"
            )
        for role, path in self.files.items():
            check_readable(role, path)
        self._digests: dict[str, tuple[str, int]] | None = None
        self._qrels: dict[str, dict[str, int]] | None = None

    def digests(self) -> dict[str, tuple[str, int]]:
        """Each file's (SHA-256, line ends), computed once."""
        if self._digests is None:
            self._digests = {role: file_digest(path) for role, path in self.files.items()}
        return self._digests

    def _content_key(self, roles: tuple[str, ...]) -> str:
        """A hash of these files' contents, each file's format (by its name) and the readers'."""
        parts = {
            "format": LOCAL_FORMAT,
            **{role: [self.digests()[role][0], is_jsonl(self.files[role])] for role in roles},
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def identity(self) -> str:
        """What the scores depend on: the three files' contents, not where they lie."""
        return "local:" + self._content_key(("corpus", "queries", "qrels"))

    def record(self) -> dict[str, Any]:
        """For the manifest: each file's path and content hash."""
        digests = self.digests()
        files = {role: {"path": str(path), "sha256": digests[role][0]} for role, path in self.files.items()}
        return {"local_files": files}

    def qrels(self) -> dict[str, dict[str, int]]:
        if self._qrels is None:
            path = self.files["qrels"]
            self._qrels = read_within_memory(lambda: read_qrels(path), f"{path} does not fit in memory")
        return self._qrels

    def queries(self) -> dict[str, str]:
        """The judged queries (as BEIR's loader keeps a split's: a queries file usually holds
        every split's); a judged query the file lacks is refused, since it would score 0."""
        judged = self.qrels()
        path = self.files["queries"]
        every = read_within_memory(lambda: read_queries(path, judged), f"{path} does not fit in memory")
        missing = sorted(set(self.qrels()) - set(every))
        if missing:
            raise UserError(
                f"{self.files['qrels']} judges {len(missing)} queries that {self.files['queries']} does not "
                f"have (e.g. {missing[0]!r}); are they files of the same dataset?"
            )
        return {query_id: text for query_id, text in every.items() if query_id in self.qrels()}

    def documents(self, doc_ids: Iterable[str]) -> dict[str, str]:
        """Texts of the given documents; ids absent from the corpus are absent from the result."""
        found = self._store().get_many(list(doc_ids))
        return {doc_id: document_text(doc) for doc_id, doc in found.items()}

    def iter_documents(self) -> Iterator[tuple[str, str]]:
        for doc in self._checked_documents():
            yield doc.doc_id, document_text(doc)

    def iter_fields(self) -> Iterator[tuple[str, str, str]]:
        for doc in self._checked_documents():
            yield doc.doc_id, doc.title, doc.text

    def corpus_id(self) -> str:
        """The corpus by content: what is built from it (doc store, BM25 index, embeddings) is
        shared by every entry naming the same corpus, wherever it lies."""
        return f"local-{self._content_key(('corpus',))[:16]}"

    def documents_count(self) -> int | None:
        """The corpus's lines (one document each, blank lines aside): a count for estimates."""
        return self.digests()["corpus"][1] or None

    def _checked_documents(self) -> Iterator[LocalDoc]:
        """The corpus's documents, refusing a doc id given twice (a lookup would return either).
        Ids are kept as 8-byte hashes, so a corpus of 100M documents needs 800 MB here; a hash
        seen twice is confirmed, with its lines, by a second read (two ids may share one: about
        1 in 4,000 for 100M ids)."""
        seen = array("Q")
        for _, doc in read_documents(self.files["corpus"]):
            seen.append(_id_hash(doc.doc_id))
            yield doc
        import numpy as np

        hashes = np.sort(np.frombuffer(seen, dtype=np.uint64))
        repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
        for start in range(0, len(repeated), CONFIRMED_PER_READ):  # (a few reads at most)
            self._refuse_repeated_id({int(h) for h in repeated[start : start + CONFIRMED_PER_READ]})

    def _refuse_repeated_id(self, id_hashes: set[int]) -> None:
        """Refuse the first id given twice among those of `id_hashes`, if any is: ids that only
        share a hash are no repetition."""
        lines: dict[str, list[int]] = {}
        for number, doc in read_documents(self.files["corpus"]):
            if _id_hash(doc.doc_id) in id_hashes:
                lines.setdefault(doc.doc_id, []).append(number)
        repeated = [(numbers[1], numbers[0], doc_id) for doc_id, numbers in lines.items() if len(numbers) > 1]
        if repeated:
            again, first, doc_id = min(repeated)
            corpus = self.files["corpus"]
            raise UserError(f"{corpus}, line {again}: document {doc_id!r} again (first on line {first})")

    def _store(self) -> Any:
        """ir_datasets' doc store of the corpus, built once (complete, or not there at all)."""
        from ir_datasets.indices import PickleLz4FullStore

        folder = cache_root() / "docstores" / self.corpus_id()

        def store(path: Path) -> Any:
            return PickleLz4FullStore(
                path=str(path), init_iter_fn=self._checked_documents, data_cls=LocalDoc,
                lookup_field="doc_id", index_fields=["doc_id"], count_hint=self.documents_count(),
            )  # fmt: skip

        def build(building: Path) -> None:
            built = store(building)
            built.build()
            built.lookup.close()

        remove_left_by_killed_builds(folder)
        if not folder.is_dir():
            with building_claim(folder, f"the document store of {self.id}") as needed:
                if needed:
                    note = f"building the document store of {self.id} (once; cached in {folder})"
                    print(note, file=sys.stderr)
                    build_in_place(folder, build, "document store")
        return store(folder)
