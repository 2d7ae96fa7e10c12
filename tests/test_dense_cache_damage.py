"""A complete corpus cache damaged after it was written (a shard cut short or rewritten, the doc id
order edited, `complete.json` changed): each is refused in one line naming the file to delete, and
deleting it makes the next run whole again. Before, a shard of fewer rows was searched as it was
(documents silently missing from every run), and a shard cut short, an impossible shard count or a
file of another shape ended in a traceback or filled memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rerank_eval.errors import UserError
from rerank_eval.first_stage.dense.corpus import CorpusEmbeddings, Shard

DOCUMENTS = [(f"d{i}", f"text {i}") for i in range(5)]  # shards of two: 2, 2, 1
VECTORS = np.arange(5 * 4, dtype=np.float32).reshape(5, 4) / 8


def finished(folder: Path) -> CorpusEmbeddings:
    cache = CorpusEmbeddings(folder, 2, "float16")
    cache.create({"test": "damage"})
    write_all(cache)
    cache.finish(3, 5, "sha")
    return cache


def write_all(cache: CorpusEmbeddings) -> None:
    for index, start in enumerate(range(0, 5, 2)):
        cache.write_shard(Shard.of(index, DOCUMENTS[start : start + 2]), VECTORS[start : start + 2])


def refusal(cache: CorpusEmbeddings) -> str:
    with pytest.raises(UserError) as refused:
        cache.complete()
    return str(refused.value)


def named(cache: CorpusEmbeddings, name: str, what: str) -> str:
    return (
        f"the corpus embeddings in {cache.folder} are damaged: {name} {what}; delete {name} and run "
        f"again to make it again"
    )


def made_whole_again(cache: CorpusEmbeddings) -> None:
    """What the next run does once the named file is deleted: the shards not whole are written
    again, then the cache is finished again; it is then complete, with the vectors first written."""
    assert cache.complete() is None
    for index, start in enumerate(range(0, 5, 2)):
        if not cache.has_shard(Shard.of(index, DOCUMENTS[start : start + 2])):
            cache.write_shard(Shard.of(index, DOCUMENTS[start : start + 2]), VECTORS[start : start + 2])
    cache.finish(3, 5, "sha")
    assert cache.complete() is not None
    stored = np.concatenate([cache.shard(index) for index in range(3)])
    assert np.array_equal(stored, VECTORS.astype(np.float16))


def test_an_intact_cache_is_complete_and_records_its_doc_id_order_hash(tmp_path):
    import hashlib

    cache = finished(tmp_path / "corpus")
    info = cache.complete()
    assert info is not None and info["documents"] == 5 and info["dimension"] == 4
    order = (cache.folder / "ranks.npy").read_bytes() + (cache.folder / "ids_sorted.npy").read_bytes()
    assert info["order_sha256"] == hashlib.sha256(order).hexdigest()


@pytest.mark.parametrize(
    ("stored", "what"),
    [
        (VECTORS[2:3], "holds float16 (1, 4), not float16 (2, ...)"),  # rows lost: documents missing
        (VECTORS[2:4, :3], "holds vectors 3 wide, not 4"),
        (VECTORS[2:4], "holds float32 (2, 4), not float16 (2, ...)"),
    ],
)
def test_a_shard_of_another_shape_or_type_is_refused_naming_it(tmp_path, stored, what):
    cache = finished(tmp_path / "corpus")
    shard = cache.folder / "shard-000001.npy"
    np.save(shard, stored if "float32" in what else stored.astype(np.float16))
    assert refusal(cache) == named(cache, "shard-000001.npy", what)
    shard.unlink()
    made_whole_again(cache)


@pytest.mark.parametrize("damage", ["cut short", "objects"])
def test_a_shard_that_cannot_be_mapped_is_refused_naming_it(tmp_path, damage):
    cache = finished(tmp_path / "corpus")
    shard = cache.folder / "shard-000002.npy"
    if damage == "cut short":
        shard.write_bytes(shard.read_bytes()[:-3])
    else:
        np.save(shard, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    message = refusal(cache)
    assert message.startswith(
        f"the corpus embeddings in {cache.folder} are damaged: shard-000002.npy cannot be read ("
    )
    assert message.endswith("; delete shard-000002.npy and run again to make it again")
    shard.unlink()
    made_whole_again(cache)


@pytest.mark.parametrize("name", ["ranks.npy", "ids_sorted.npy"])
def test_an_edited_doc_id_order_is_refused(tmp_path, name):
    """The order files map each search hit to its doc id: reversed, every score goes to another
    document, and their shape alone does not show it."""
    cache = finished(tmp_path / "corpus")
    path = cache.folder / name
    np.save(path, np.load(path)[::-1])
    assert refusal(cache) == named(cache, "ranks.npy", "or ids_sorted.npy is not the doc id order written")
    path.unlink()
    made_whole_again(cache)


@pytest.mark.parametrize(
    "change",
    [{"documents": 4}, {"dimension": 3}, {"storage": "float32"}, {"shard_size": 3}, {"documents": "5"}],
)
def test_a_complete_json_that_does_not_describe_the_cache_is_refused(tmp_path, change):
    cache = finished(tmp_path / "corpus")
    record = cache.folder / "complete.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), **change}))
    if change == {"documents": 4}:  # 4 documents would be two shards: three are counted
        expected = named(cache, "complete.json", "does not describe this cache's shards")
    elif change == {"dimension": 3}:
        expected = named(cache, "complete.json", "says the vectors are 3 wide; its shards hold 4")
    else:
        expected = named(cache, "complete.json", "does not describe this cache's shards")
    assert refusal(cache) == expected
    record.unlink()
    made_whole_again(cache)


def test_an_impossible_shard_count_is_no_complete_cache_and_costs_no_memory(tmp_path):
    """The files a count stands for are looked for one by one: a count of 10^12 stops at the
    first one missing (it built a list of 2 × 10^12 paths)."""
    cache = finished(tmp_path / "corpus")
    record = cache.folder / "complete.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "shards": 10**12}))
    assert cache.complete() is None
    made_whole_again(cache)


@pytest.mark.parametrize("older", ["order not hashed", "ranks.npy deleted", "ids_sorted.npy deleted"])
def test_a_cache_without_its_order_or_its_hash_is_finished_again_from_its_shards(tmp_path, older):
    """A cache an earlier rerank-eval completed, or one whose order files were deleted as a refusal
    says: finished again from the shards' id lists alone (the corpus, 33M passages for MIRACL
    English, not read again)."""
    cache = finished(tmp_path / "corpus")
    info = cache.complete()
    record = cache.folder / "complete.json"
    if older == "order not hashed":
        record.write_text(json.dumps({k: v for k, v in info.items() if k != "order_sha256"}))
    else:
        (cache.folder / older.split()[0]).unlink()
    assert cache.complete() is None
    assert cache.refinished() == info == cache.complete()


def test_a_cache_whose_id_lists_cannot_be_read_is_not_finished_again_from_them(tmp_path):
    cache = finished(tmp_path / "corpus")
    (cache.folder / "ranks.npy").unlink()
    (cache.folder / "shard-000001.ids.json").write_text("{")
    assert cache.refinished() is None
    (cache.folder / "complete.json").unlink()
    assert cache.refinished() is None


def test_a_shard_of_another_type_is_not_taken_for_written(tmp_path):
    """While encoding, a shard in float32 where the cache stores float16 is written again rather
    than kept (it would be refused once the cache is complete)."""
    cache = finished(tmp_path / "corpus")
    np.save(cache.folder / "shard-000000.npy", VECTORS[:2])
    assert not cache.has_shard(Shard.of(0, DOCUMENTS[:2]))
    assert cache.has_shard(Shard.of(1, DOCUMENTS[2:4]))
