"""Corpus embeddings on disk: fixed shards of the corpus, each written atomically, never encoded twice.

The corpus is cut, in ir_datasets' document order, into shards of `shard_size` documents. Shard i
is `shard-i.ids.json` (its doc ids) plus `shard-i.npy` (its vectors, float16 by default); the
vectors file is renamed into place last, so a shard is there whole or not at all, and a `kill -9`
loses at most the shard being encoded and the one being written. Batches never cross a shard, so a
resumed run encodes each remaining shard exactly as an uninterrupted one would. Under torchrun
rank r encodes the shards i with i % world == r; processes sharing the cache claim the shards
they encode (`encoding`). When every shard is there, `complete.json`
records the corpus' size and content hash, and `ranks.npy` / `ids_sorted.npy` give each document's
place in trec_eval's doc id order, which the exact search uses to break ties.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from rerank_eval.cache import (
    claim,
    claims_holders,
    disk_error,
    open_own_temporary,
    release,
    remove_dead_temporaries,
    wait_for_claim,
)
from rerank_eval.errors import UserError

CACHE_FORMAT = 2
STORAGE_DTYPES = {"float16": np.float16, "float32": np.float32}


def _pair(key: str, text: str) -> bytes:
    return key.encode("utf-8") + b"\0" + text.encode("utf-8") + b"\0"


def pairs_sha256(pairs: Iterable[tuple[str, str]]) -> str:
    """SHA-256 of (id, text) pairs in order: a shard's documents, a dataset's queries."""
    digest = hashlib.sha256()
    for key, text in pairs:
        digest.update(_pair(key, text))
    return digest.hexdigest()


@dataclass
class Shard:
    index: int
    ids: list[str]
    texts: list[str]
    sha256: str  # of the shard's (id, text) pairs: a shard is reused only for the same documents

    @classmethod
    def of(cls, index: int, documents: list[tuple[str, str]]) -> Shard:
        return cls(index, [d for d, _ in documents], [t for _, t in documents], pairs_sha256(documents))


def corpus_shards(documents: Iterator[tuple[str, str]], size: int, digest: Any) -> Iterator[Shard]:
    """The corpus in shards of `size`, hashing every (id, text) into `digest` on the way."""
    index = 0
    while True:
        chunk = list(islice(documents, size))
        if not chunk:
            return
        for doc_id, text in chunk:
            digest.update(_pair(doc_id, text))
        yield Shard.of(index, chunk)
        index += 1


def write_file(path: Path, write) -> None:
    temporary = None
    try:
        temporary, handle = open_own_temporary(path)
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    except OSError as exc:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise disk_error(exc, path, "shards already written are kept") from None


class CorpusEmbeddings:
    """One corpus encoded by one encoder recipe, in a cache folder named by their key."""

    def __init__(self, folder: Path, shard_size: int, storage: str) -> None:
        self.folder = folder
        self.shard_size = shard_size
        self.storage = storage

    def _vectors(self, index: int) -> Path:
        return self.folder / f"shard-{index:06d}.npy"

    def _ids(self, index: int) -> Path:
        return self.folder / f"shard-{index:06d}.ids.json"

    def _claim_file(self, index: int) -> Path:
        return self.folder / f"claim-{index:06d}.lock"

    def claim_shard(self, index: int) -> int | None:
        """This process's claim on encoding shard `index` (None: another process sharing the cache
        encodes it now). Two commands that need the same corpus encoded so share the shards."""
        try:
            return claim(self._claim_file(index))
        except OSError as exc:
            raise disk_error(exc, self._claim_file(index), "shards already written are kept") from None

    def shards_holders(self, indexes: list[int]) -> str:
        """Who claimed the shards `indexes` (`cache.claims_holders`)."""
        return claims_holders([self._claim_file(index) for index in indexes])

    def wait_for_shard(self, index: int) -> None:
        """Return once the process that claimed shard `index` wrote it or ended."""
        try:
            wait_for_claim(self._claim_file(index))
        except OSError as exc:
            raise disk_error(exc, self._claim_file(index), "shards already written are kept") from None

    def create(self, key: dict[str, Any]) -> None:
        """The folder and its `key.json` (what the embeddings depend on), checked writable; the
        temporary files of processes killed while writing (a shard can be gigabytes) removed."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_dead_temporaries(self.folder)
            write_file(
                self.folder / "key.json", lambda h: h.write(json.dumps(key, indent=1, default=str).encode())
            )
        except OSError as exc:
            raise UserError(f"cannot write the embedding cache {self.folder}: {exc.strerror}") from None

    def discard_if_unused(self) -> None:
        """Remove the folder where it holds its key and claims alone (a corpus refused before any
        shard was written), so that a refused run leaves nothing behind; anything else in it stays,
        and so does all of it while another process holds a claim there."""
        held: list[int] = []
        try:
            names = [path.name for path in self.folder.iterdir()]
            claims = [name for name in names if name.endswith(".lock")]
            if "key.json" not in names or len(claims) != len(names) - 1:
                return
            for name in claims:
                taken = claim(self.folder / name)
                if taken is None:  # another process encodes a shard of this corpus
                    return
                held.append(taken)
            for name in names:
                (self.folder / name).unlink()
            self.folder.rmdir()
        except OSError:  # another process is writing there, or it is gone already
            pass
        finally:
            for taken in held:
                release(taken)

    def complete(self) -> dict[str, Any] | None:
        """What `complete.json` records, where every file it stands for is there: a shard removed
        since (by hand, or a process killed as it rewrote one) is encoded again, not an error in
        every later run. What killed writers left is removed on the way. A file that is there but
        damaged (cut short, of another shape, edited) is refused in one line naming it
        (`_check_whole`); one completed before the doc id order was hashed is no complete cache
        here (`refinished` completes it again)."""
        info = self._recorded()
        if info is None or "order_sha256" not in info:
            return None
        try:
            shards = int(info["shards"])
            remove_dead_temporaries(self.folder)
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if not all(path.is_file() for path in self._needed(shards)):  # lazily: any number may be there
            return None
        self._check_whole(info)
        return info

    def refinished(self) -> dict[str, Any] | None:
        """Where `complete.json` and every shard are there but the doc-id order files are missing
        or were written before they were hashed (by an earlier rerank-eval): the cache finished
        again from the shards' id lists and checked (`complete`), the corpus not read again; None
        where that cannot be done (the corpus is then read, and what is missing encoded)."""
        info = self._recorded()
        if info is None:
            return None
        try:
            shards, documents = int(info["shards"]), int(info["documents"])
            corpus_sha256 = str(info["corpus_sha256"])
        except (ValueError, TypeError, KeyError):
            return None
        if documents < 1 or shards != self._shard_count(documents):
            return None
        if not all(path.is_file() for path in self._needed(shards, order=False)):
            return None
        try:
            self.finish(shards, documents, corpus_sha256)
        except (OSError, ValueError, TypeError, KeyError):  # an id list that cannot be read as one
            return None
        return self.complete()

    def _recorded(self) -> dict[str, Any] | None:
        """What `complete.json` holds, where it is a JSON object (None: absent or unreadable)."""
        try:
            info = json.loads((self.folder / "complete.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def _shard_count(self, documents: int) -> int:
        return -(-documents // self.shard_size)

    def _needed(self, shards: int, order: bool = True) -> Iterator[Path]:
        if order:
            yield from (self.folder / "ranks.npy", self.folder / "ids_sorted.npy")
        for index in range(shards):
            yield from (self._vectors(index), self._ids(index))

    def _check_whole(self, info: dict[str, Any]) -> None:
        """Every file of a complete cache of the shape `complete.json` records, which itself agrees
        with this cache's shard size and storage; the doc id order as written (its hash). A shard's
        vectors are checked by shape and type only (reading gigabytes each run would cost what the
        search does); their ids are not read again once complete."""
        documents, shards, dimension = (info.get(name) for name in ("documents", "shards", "dimension"))
        sizes = (documents, shards, dimension)
        if not all(type(size) is int and size > 0 for size in sizes) or (
            shards != self._shard_count(documents)
            or info.get("shard_size") != self.shard_size
            or info.get("storage") != self.storage
        ):
            raise self._damaged("complete.json", "does not describe this cache's shards")
        try:
            order_sha256 = _files_sha256([self.folder / "ranks.npy", self.folder / "ids_sorted.npy"])
        except OSError as exc:
            raise self._damaged("ranks.npy", f"or ids_sorted.npy cannot be read ({exc.strerror})") from None
        if order_sha256 != info["order_sha256"]:
            raise self._damaged("ranks.npy", "or ids_sorted.npy is not the doc id order written")
        widths = [self._checked_width(index, documents) for index in range(shards)]
        if widths != [dimension] * shards:  # all alike: complete.json is the one that differs
            if len(set(widths)) == 1:
                what = f"says the vectors are {dimension} wide; its shards hold {widths[0]}"
                raise self._damaged("complete.json", what)
            index = next(i for i, width in enumerate(widths) if width != dimension)
            what = f"holds vectors {widths[index]} wide, not {dimension}"
            raise self._damaged(self._vectors(index).name, what)

    def _checked_width(self, index: int, documents: int) -> int:
        """The width of shard `index`'s vectors, once it maps as the type and rows it must hold."""
        rows = min(self.shard_size, documents - index * self.shard_size)
        try:
            vectors = self.shard(index)
        except (OSError, ValueError) as exc:  # cut short, or not an array that maps
            raise self._damaged(self._vectors(index).name, f"cannot be read ({exc})") from None
        if vectors.dtype != STORAGE_DTYPES[self.storage] or vectors.ndim != 2 or vectors.shape[0] != rows:
            what = f"holds {vectors.dtype} {vectors.shape}, not {self.storage} ({rows}, ...)"
            raise self._damaged(self._vectors(index).name, what)
        return int(vectors.shape[1])

    def _damaged(self, name: str, what: str) -> UserError:
        return UserError(
            f"the corpus embeddings in {self.folder} are damaged: {name} {what}; delete {name} and "
            f"run again to make it again"
        )

    def has_shard(self, shard: Shard) -> bool:
        """A shard written whole for exactly these documents, ids and texts (a changed corpus is
        encoded again)."""
        return self.has_written(shard.index, shard.sha256, len(shard.ids))

    def has_written(self, index: int, sha256: str, documents: int) -> bool:
        """Shard `index` written whole for the documents whose (id, text) pairs hash to `sha256`."""
        try:
            record = json.loads(self._ids(index).read_text(encoding="utf-8"))
            vectors = np.load(self._vectors(index), mmap_mode="r")
        except (OSError, ValueError):  # (a file cut short does not map)
            return False
        if not isinstance(record, dict) or not isinstance(record.get("ids"), list):
            return False
        if vectors.dtype != STORAGE_DTYPES[self.storage] or vectors.ndim != 2:
            return False
        return record.get("sha256") == sha256 and len(record["ids"]) == vectors.shape[0] == documents

    def write_shard(self, shard: Shard, vectors: np.ndarray, made_with: dict[str, str] | None = None) -> None:
        """The shard written whole, unless another process sharing the cache wrote it first for
        these very documents (the same recipe gives the same vectors): rewriting it would remove
        it for a while under that process, which may be reading it. `made_with` (the encoder's
        libraries and device) is recorded beside its ids."""
        if self.has_shard(shard):
            return
        with np.errstate(over="ignore"):  # an overflow is refused just below, in one line
            stored = vectors.astype(STORAGE_DTYPES[self.storage])
        if not np.isfinite(stored).all():  # finite in float32 can overflow float16 (beyond 65,504)
            raise UserError(
                f"shard {shard.index}: a vector component does not fit {self.storage} storage; "
                f"set the first stage's storage: float32"
            )
        # A shard of an earlier corpus at this index goes first: killed between the two renames
        # below, new ids beside its old vectors (of the same length) would pass for a whole shard.
        try:
            self._vectors(shard.index).unlink(missing_ok=True)
        except OSError as exc:
            raise disk_error(exc, self._vectors(shard.index), "shards already written are kept") from None
        record = {"ids": shard.ids, "sha256": shard.sha256, **({"made_with": made_with} if made_with else {})}
        write_file(self._ids(shard.index), lambda h: h.write(json.dumps(record).encode("utf-8")))
        write_file(self._vectors(shard.index), lambda h: np.save(h, stored))

    def shard(self, index: int) -> np.ndarray:
        """A shard's vectors, memory-mapped (nothing corpus-sized is held in memory)."""
        return np.load(self._vectors(index), mmap_mode="r")

    def shard_ids(self, index: int) -> list[str]:
        return self._record(index)["ids"]

    def _record(self, index: int) -> dict[str, Any]:
        return json.loads(self._ids(index).read_text(encoding="utf-8"))

    def shard_with_ranks(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """A shard's vectors and its documents' places in doc id order (both memory-mapped)."""
        vectors = self.shard(index)
        start = index * self.shard_size
        return vectors, np.load(self.folder / "ranks.npy", mmap_mode="r")[start : start + vectors.shape[0]]

    def shard_holding(self, doc_id: str) -> Path:
        """The vectors file of the shard that holds `doc_id`: its place in doc id order, then that
        place's position in the corpus (only for a refusal: it reads the whole order)."""
        place = int(np.searchsorted(self.ids_sorted(), doc_id.encode("utf-8")))
        ranks = np.load(self.folder / "ranks.npy", mmap_mode="r")
        return self._vectors(int(np.flatnonzero(ranks == place)[0]) // self.shard_size)

    def ids_sorted(self) -> np.ndarray:
        return np.load(self.folder / "ids_sorted.npy", mmap_mode="r")

    def finish(self, shards: int, documents: int, corpus_sha256: str) -> dict[str, Any]:
        """Every shard is there: doc id order for tie-breaking, then `complete.json` (last)."""
        records = [self._record(index) for index in range(shards)]
        ids = [doc_id for record in records for doc_id in record["ids"]]
        encoded = np.array([doc_id.encode("utf-8") for doc_id in ids], dtype=bytes)
        # trec_eval breaks equal scores by doc id (strcmp): byte order of the UTF-8 ids.
        order = np.argsort(encoded, kind="stable")
        if len(ids) != len(set(ids)):
            raise UserError(
                f"the corpus has {len(ids) - len(set(ids))} repeated doc ids; a run cannot hold them"
            )
        if len(ids) >= 2**32:  # ranks take the low 32 bits of a search key
            raise UserError(f"the corpus has {len(ids):,} documents; exact search handles fewer than 2^32")
        ranks = np.empty(len(ids), dtype=np.int64)
        ranks[order] = np.arange(len(ids), dtype=np.int64)
        write_file(self.folder / "ranks.npy", lambda h: np.save(h, ranks))
        write_file(self.folder / "ids_sorted.npy", lambda h: np.save(h, encoded[order]))
        order_sha256 = _files_sha256([self.folder / "ranks.npy", self.folder / "ids_sorted.npy"])
        dimension = int(self.shard(0).shape[1]) if shards else 0
        info = {
            "format": CACHE_FORMAT,
            "shards": shards,
            "documents": documents,
            "dimension": dimension,
            "corpus_sha256": corpus_sha256,
            "order_sha256": order_sha256,
            "storage": self.storage,
            "shard_size": self.shard_size,
            **encoded_with(records),
        }
        write_file(self.folder / "complete.json", lambda h: h.write(json.dumps(info, indent=1).encode()))
        return info


def _files_sha256(paths: list[Path]) -> str:
    """SHA-256 of the files' bytes one after the other (read in blocks)."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            while block := handle.read(1 << 24):
                digest.update(block)
    return digest.hexdigest()


def encoded_with(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The distinct libraries and devices that encoded the shards (one entry unless a run was
    resumed after an upgrade, or ranks differ), and how many shards recorded none (written by
    rerank-eval before shards recorded it)."""
    recorded = [r["made_with"] for r in records if isinstance(r.get("made_with"), dict)]
    made = {json.dumps(entry, sort_keys=True) for entry in recorded}
    unrecorded = len(records) - len(recorded)
    return {
        "encoded_with": [json.loads(entry) for entry in sorted(made)],
        **({"shards_without_encoder_record": unrecorded} if unrecorded else {}),
    }
