"""Corpus encoding and exact search, beyond the runs of tests/test_dense_first_stage.py: query
blocks over many queries, shards on the queries' device, the side texts are encoded as, each rank's
own shards, the corpus hash and times recorded, shards another process writes meanwhile. Each test
fails on a mutant a mutation round found surviving."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from rerank_eval.cache import release
from rerank_eval.first_stage.dense import encoding as encoding_module
from rerank_eval.first_stage.dense import search as search_module
from rerank_eval.first_stage.dense.corpus import CorpusEmbeddings, Shard
from rerank_eval.first_stage.dense.search import exact_search, keys_to_run, shard_top_k
from tests.test_dense_first_stage import CPU, brute_force, doc_id_ranks, grid_collection, ranked
from tests.test_shared_cache import DOCUMENTS, _LengthEncoder


def test_exact_search_with_more_queries_than_dimensions_matches_brute_force():
    """Query blocks step over the queries (rows), not the vector dimension: real query sets are
    far larger than the dimension, the test collections' seven queries are not."""
    ids, docs, _, _ = grid_collection(seed=3)
    rng = np.random.default_rng(3)
    queries = rng.integers(-6, 7, size=(40, docs.shape[1])) / 4.0  # 40 queries > 16 dimensions
    query_ids = [f"q{i}" for i in range(len(queries))]
    ranks, ids_sorted = doc_id_ranks(ids)
    shards = [(docs[:20].astype(np.float32), ranks[:20]), (docs[20:].astype(np.float32), ranks[20:])]
    keys = exact_search(queries.astype(np.float32), shards, 6, CPU, query_batch=3)
    assert keys.shape == (40, 6)
    assert ranked(keys_to_run(keys, query_ids, ids_sorted)) == brute_force(ids, docs, query_ids, queries, 6)


def test_a_shard_is_scored_on_the_queries_device(monkeypatch):
    """The shard's vectors and ranks are copied to the queries' device (on a GPU, a CPU copy could
    not be multiplied with them); the meta device stands in for the GPU."""
    moved = []

    class Recorded(torch.Tensor):
        def to(self, *args, **kwargs):
            moved.append(args[0] if args else kwargs.get("device"))
            return super().to(*args, **kwargs)

    def from_numpy(array):
        return torch.as_tensor(array).as_subclass(Recorded)

    seen = []

    def spy(scores, ranks):
        seen.append((scores.device.type, ranks.device.type))
        return torch.zeros(scores.shape, dtype=torch.int64)

    monkeypatch.setattr(search_module.torch, "from_numpy", from_numpy)
    monkeypatch.setattr(search_module, "score_keys", spy)
    meta = torch.device("meta")
    shard_top_k(torch.zeros((2, 3), device=meta), np.ones((4, 3), np.float32), np.arange(4), 2, 8)
    assert moved == [meta, meta] and seen == [("meta", "meta")]


def test_a_shard_another_process_wrote_before_the_wait_is_counted_without_waiting(
    tmp_path, capsys, monkeypatch
):
    """A shard claimed elsewhere that is written by the time this read ends: counted at once, no
    'waiting' line, nothing left unwritten, its vectors the other process's."""
    counts: list = []

    @contextlib.contextmanager
    def recorded(total, label):
        yield counts.append

    monkeypatch.setattr(encoding_module, "counting", recorded)
    cache = CorpusEmbeddings(tmp_path / "corpus", 2, "float32")
    cache.create({"test": 1})
    held = cache.claim_shard(1)
    assert held is not None
    theirs = np.array([[7, 7], [7, 7]], np.float32)

    class OtherFinishesFirst(_LengthEncoder):
        def queue_tokens(self, rows, side, progress=None):
            if rows == [DOCUMENTS[4][1], DOCUMENTS[5][1]]:  # shard 2: meanwhile shard 1 is written
                cache.write_shard(Shard.of(1, DOCUMENTS[2:4]), theirs)
                release(held)
            return super().queue_tokens(rows, side, progress)

    encoder = OtherFinishesFirst()
    report = encoding_module.encode_corpus(cache, iter(DOCUMENTS), 6, encoder)
    assert "waiting" not in capsys.readouterr().err
    assert report.left_unwritten == [] and report.encoded_passages == 4
    assert encoder.encoded == [DOCUMENTS[i][1] for i in (0, 1, 4, 5)]
    assert counts.count(None) == 0 and sum(counts) == 6
    assert np.array_equal(cache.shard(1), theirs)


def test_encoding_reports_the_corpus_hash_and_times_it_took(tmp_path):
    """The corpus hash `finish` records (and every dense run's manifest shows) is the hash of every
    (id, text) pair; the seconds are this read's, with no wait when no shard was claimed elsewhere."""
    import time

    from rerank_eval.first_stage.dense import corpus as corpus_module

    cache = CorpusEmbeddings(tmp_path / "corpus", 2, "float32")
    cache.create({"test": 1})
    start = time.monotonic()
    report = encoding_module.encode_corpus(cache, iter(DOCUMENTS), 6, _LengthEncoder())
    elapsed = time.monotonic() - start
    assert report.corpus_sha256 == corpus_module.pairs_sha256(DOCUMENTS)
    assert report.waited_seconds == 0.0
    assert 0.0 <= report.seconds <= elapsed


def test_the_wait_for_a_shard_claimed_elsewhere_is_timed_apart(tmp_path, capsys):
    import time

    from tests.test_shared_cache import _encoding_with_shard_1_claimed

    start = time.monotonic()
    cache, held, _, thread, outcome = _encoding_with_shard_1_claimed(tmp_path, capsys)
    time.sleep(0.2)
    cache.write_shard(Shard.of(1, DOCUMENTS[2:4]), np.array([[7, 7], [7, 7]], np.float32))
    release(held)
    thread.join(30)
    elapsed = time.monotonic() - start
    report = outcome["value"]
    assert 0.2 <= report.waited_seconds <= elapsed
    assert 0.0 <= report.seconds <= elapsed - report.waited_seconds


def test_passages_are_queued_as_passages(tmp_path):
    """queue_tokens is told the side: with per-side adapters (jina-embeddings-v3) the side picks the
    adapter, and an unknown side runs the base model (every document vector moves)."""
    sides = []

    class Sides(_LengthEncoder):
        def tokenize(self, texts, side):
            sides.append(("tokenize", side))
            return super().tokenize(texts, side)

        def queue_tokens(self, rows, side, progress=None):
            sides.append(("queue", side))
            return super().queue_tokens(rows, side, progress)

    cache = CorpusEmbeddings(tmp_path / "corpus", 2, "float32")
    cache.create({"test": 1})
    encoding_module.encode_corpus(cache, iter(DOCUMENTS), 6, Sides())
    assert set(sides) == {("tokenize", "passage"), ("queue", "passage")}


def test_a_rank_encodes_only_its_own_shards(tmp_path):
    """Rank 1 of 2 encodes shards 1, 3, ...; the others are rank 0's (encoding them too doubles the
    work of every multi-GPU run)."""
    from tests.test_shared_cache import _written

    cache = CorpusEmbeddings(tmp_path / "corpus", 2, "float32")
    cache.create({"test": 1})
    encoder = _LengthEncoder()
    report = encoding_module.encode_corpus(cache, iter(DOCUMENTS), 6, encoder, rank=1, world=2)
    assert encoder.encoded == [DOCUMENTS[2][1], DOCUMENTS[3][1]]
    assert _written(cache) == {1} and report.encoded_passages == 2
    assert report.shards == 3 and report.documents == 6


def test_the_wait_for_two_shards_says_shards(tmp_path, capsys):
    from rerank_eval.cache import process_tag
    from tests.test_shared_cache import _in_a_thread, _until, _written

    cache = CorpusEmbeddings(tmp_path / "corpus", 2, "float32")
    cache.create({"test": 1})
    held = [cache.claim_shard(1), cache.claim_shard(2)]
    encoder = _LengthEncoder()
    thread, outcome = _in_a_thread(lambda: encoding_module.encode_corpus(cache, iter(DOCUMENTS), 6, encoder))
    said = [""]

    def waiting() -> bool:
        said[0] += capsys.readouterr().err
        return "waiting" in said[0] and said[0].endswith("\n")  # (the line and its end are two writes)

    _until(waiting, "no wait")
    assert said[0] == f"waiting for the 2 shards process {process_tag()} is encoding into {cache.folder}\n"
    for index, claim in zip((1, 2), held):
        cache.write_shard(Shard.of(index, DOCUMENTS[2 * index : 2 * index + 2]), np.ones((2, 2), np.float32))
        release(claim)
    thread.join(30)
    assert outcome["value"].left_unwritten == [] and _written(cache) == {0, 1, 2}
