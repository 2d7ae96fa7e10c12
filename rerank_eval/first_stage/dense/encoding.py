"""Encoding a corpus into its cache (`corpus.CorpusEmbeddings`): reading, tokenizing, encoding and
writing overlap, and processes sharing the cache share the shards.

Each process claims a shard (`claim-i.lock`, a flock that ends with its process) before encoding
it, so that two commands needing the same corpus encoded at once, say two rerankers run on two
GPUs of one machine, each encode about half of it instead of both encoding all of it. A shard
another process holds is waited for at the end; one whose process ended without writing it
(killed, or failed) is encoded by a later read of the corpus (`left_unwritten`).
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rerank_eval.cache import release
from rerank_eval.errors import UserError
from rerank_eval.first_stage.dense.corpus import CorpusEmbeddings, Shard, corpus_shards
from rerank_eval.runtime.progress import counting


@dataclass
class _Counted:
    """One shard's documents in the progress count: as a CPU runs its batches, the share of the
    shard's work done (so the rate shown is the rate kept, long batches first or not); the rest
    once the shard is written (on CUDA all of them: queued is not done)."""

    advance: Callable[[int], None]
    documents: int
    done: int = 0

    def batch(self, share_done: float) -> None:
        reached = int(self.documents * share_done)
        if reached > self.done:
            self.advance(reached - self.done)
            self.done = reached

    def written(self) -> None:
        if self.documents > self.done:
            self.advance(self.documents - self.done)


@dataclass
class EncodingReport:
    shards: int = 0
    documents: int = 0
    encoded_passages: int = 0
    seconds: float = 0.0  # reading, encoding and writing; not waiting for other processes
    waited_seconds: float = 0.0  # waiting for the shards other processes claimed
    corpus_sha256: str = ""
    #: shards another process claimed but ended without writing (killed, or failed): encoding them
    #: takes another read of the corpus
    left_unwritten: list[int] = field(default_factory=list)


@dataclass
class _ClaimedElsewhere:
    """A shard of this rank that another process sharing the cache was encoding when it came."""

    index: int
    sha256: str
    documents: int


def _wait_for_others(
    cache: CorpusEmbeddings, shards: list[_ClaimedElsewhere], advance: Callable[[int], None]
) -> list[int]:
    """Wait for the shards other processes claimed; those they ended without writing are returned.
    The message counts the shards still unwritten when the wait begins, and names their holders
    (a process stopped with SIGSTOP holds its claims until it goes on)."""
    pending = []
    for shard in shards:
        if cache.has_written(shard.index, shard.sha256, shard.documents):
            advance(shard.documents)
        else:
            pending.append(shard)
    if pending:
        who = cache.shards_holders([shard.index for shard in pending])
        count = f"{len(pending):,} shard{'s' * (len(pending) != 1)}"
        print(f"waiting for the {count} {who} is encoding into {cache.folder}", file=sys.stderr, flush=True)
    unwritten = []
    for shard in pending:
        cache.wait_for_shard(shard.index)
        if cache.has_written(shard.index, shard.sha256, shard.documents):
            advance(shard.documents)
        else:
            unwritten.append(shard.index)
    return unwritten


def encode_corpus(
    cache: CorpusEmbeddings,
    documents: Iterator[tuple[str, str]],
    total: int,
    encoder: Any,
    rank: int = 0,
    world: int = 1,
    label: str = "encoding",
) -> EncodingReport:
    """Encode this rank's missing shards; every rank reads (and hashes) the whole corpus.

    Three stages overlap, so that the device never waits for the host: a reader thread reads on to
    the next shard to encode and tokenizes it; this thread queues each shard's batches on the
    device (`queue_tokens`, which does not wait for them); a writer thread waits for a shard's
    vectors, checks and writes them while the next shard runs. A shard is written as soon as the
    device has it, so a kill loses the shard on the device and at most the one being written.
    """
    return _CorpusEncoding(cache, encoder, rank, world).run(documents, total, label)


class _CorpusEncoding:
    """One read of the corpus into its cache: the stages `encode_corpus` overlaps, and what they
    share (the shards claimed, those claimed elsewhere, the report, the stop)."""

    def __init__(self, cache: CorpusEmbeddings, encoder: Any, rank: int, world: int) -> None:
        self.cache, self.encoder, self.rank, self.world = cache, encoder, rank, world
        self.made_with: dict[str, str] = encoder.made_with()  # recorded with each shard
        self.report = EncodingReport()
        self.stopping = threading.Event()  # an error or an interrupt: the reader reads no further
        self.claims: dict[int, int] = {}  # this process's claims on the shards it encodes, by index
        self.elsewhere: list[_ClaimedElsewhere] = []
        self.advance: Callable[[int], None] = lambda documents: None  # the progress display's count

    def run(self, documents: Iterator[tuple[str, str]], total: int, label: str) -> EncodingReport:
        digest = hashlib.sha256()
        start = time.monotonic()
        shards = corpus_shards(self._until_stopped(documents), self.cache.shard_size, digest)
        try:  # the progress display ends with the pools, not when the error is let go of
            with counting(total, label) as self.advance:
                self._encode(shards)
                waiting = time.monotonic()
                self.report.left_unwritten = _wait_for_others(self.cache, self.elsewhere, self.advance)
                self.report.waited_seconds = time.monotonic() - waiting if self.elsewhere else 0.0
        finally:
            # after a second interrupt the reader may still be inside the generator, which then
            # refuses to close (ValueError)
            with contextlib.suppress(ValueError):
                shards.close()
            for held in self.claims.values():  # shards left unwritten by an error or an interrupt
                release(held)
        self.report.corpus_sha256 = digest.hexdigest()
        self.report.seconds = time.monotonic() - start - self.report.waited_seconds
        return self.report

    def _until_stopped(self, documents: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str]]:
        """The documents until the run stops (an error or an interrupt): the reader then leaves the
        shard it is reading at once, so an interrupt does not wait for a whole shard to be read."""
        for document in documents:
            if self.stopping.is_set():
                return
            yield document

    def _encode(self, shards: Iterator[Shard]) -> None:
        """Queue each shard the reader hands over, and hand the one before to the writer."""
        with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=1) as writer:
            try:
                following = reader.submit(self._next_to_encode, shards)
                written: Future[None] | None = None
                while (tokenized := following.result()) is not None:
                    following = reader.submit(self._next_to_encode, shards)
                    shard, distinct, rows = tokenized
                    counted = _Counted(self.advance, len(shard.ids))
                    queued = self.encoder.queue_tokens(rows, "passage", progress=counted.batch)
                    if written is not None:
                        written.result()  # a write's error stops the run here, one shard later at most
                    written = writer.submit(self._write, shard, distinct, queued, counted)
                if written is not None:
                    written.result()
            finally:
                self.stopping.set()  # (after a whole read, a no-op) the reader stops at the next shard

    def _next_to_encode(self, shards: Iterator[Shard]) -> tuple[Shard, list[str], list[list[int]]] | None:
        """This rank's next shard that is not cached yet, claimed, its distinct texts tokenized
        (None: the corpus is read, and hashed, to its end, or the run is stopping). Shards passed
        over (cached, or another rank's) count as done; those another process claimed are waited
        for at the end."""
        cache = self.cache
        while not self.stopping.is_set():  # an error or an interrupt: read no further
            shard = next(shards, None)
            if shard is None or self.stopping.is_set():  # (a shard cut short by the stop is not one)
                return None
            self.report.shards += 1
            self.report.documents += len(shard.ids)
            if shard.index % self.world == self.rank and not cache.has_shard(shard):
                held = cache.claim_shard(shard.index)
                if held is None:
                    self.elsewhere.append(_ClaimedElsewhere(shard.index, shard.sha256, len(shard.ids)))
                    continue
                if not cache.has_shard(shard):  # (not written by a claim ended since)
                    self.claims[shard.index] = held
                    distinct = list(dict.fromkeys(shard.texts))
                    return shard, distinct, self.encoder.tokenize(distinct, "passage")
                release(held)
            self.advance(len(shard.ids))
        return None

    def _write(self, shard: Shard, distinct: list[str], queued: Any, counted: _Counted) -> None:
        vectors = queued.result()
        if not np.isfinite(vectors).all():
            raise UserError(
                f"the encoder gave a vector that is not finite in shard {shard.index}; nothing of it is kept"
            )
        position = {text: i for i, text in enumerate(distinct)}
        self.cache.write_shard(shard, vectors[[position[text] for text in shard.texts]], self.made_with)
        release(self.claims.pop(shard.index))
        counted.written()
        self.report.encoded_passages += len(distinct)
