"""What every neural family shares: device and dtype choice, attention kernel, token-budget batches."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from rerank_eval.errors import UserError

#: what running out of accelerator memory raises: torch.OutOfMemoryError (any device) from torch
#: 2.5, torch.cuda.OutOfMemoryError before it (pyproject allows torch 2.4)
OUT_OF_MEMORY: type[BaseException] = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def release_cached_memory() -> None:
    """Hand the CUDA caching allocator's free blocks back, so that a retry with smaller batches (or
    the next model) finds them; nothing to do elsewhere."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def device_name(device: torch.device) -> str:
    """A GPU's model name ("NVIDIA H200"); otherwise the device type ("cpu")."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def pick_device(device: str | torch.device | None) -> torch.device:
    """The device asked for, checked to exist here; CUDA when available by default."""
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"device {device!r}: no CUDA GPU is available here")
        if chosen.index is not None and chosen.index >= count:
            raise UserError(f"device {device!r}: there are {count} CUDA GPU(s), up to cuda:{count - 1}")
    elif chosen.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"device {device!r}: Apple MPS is not available here")
    elif chosen.type != "cpu":
        raise UserError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return chosen


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA and float32 on CPU unless the user says otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    name = _ALIASES.get(dtype, dtype)
    if name not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return _DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def attention_implementation(device: torch.device, dtype: torch.dtype) -> str:
    """FlashAttention-2 when installed and usable, else PyTorch SDPA."""
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def cpu_threads(device: torch.device) -> dict[str, int]:
    """{"cpu_threads": n} on a CPU, for the keys of journaled scores and cached vectors: its float32
    matrix products split their sums by thread, so the last bits of a score or vector follow the
    count (a run resumed with another count would mix two); {} elsewhere, where the count decides
    nothing (and GPU keys stay as they were)."""
    return {"cpu_threads": torch.get_num_threads()} if device.type == "cpu" else {}


def default_batch_tokens(device: torch.device) -> int:
    """Padded tokens per forward pass when the preset does not say."""
    return 65_536 if device.type == "cuda" else 8_192


def token_budget_batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices grouped longest first so that (items × longest) stays within `budget` tokens.

    Sorting by length keeps padding small; an item longer than the budget gets a batch alone.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True):
        longest = lengths[current[0]] if current else lengths[index]
        if current and longest * (len(current) + 1) > budget:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def packed_batches(lengths: Sequence[int], budget: int, multiple: int = 1) -> list[list[int]]:
    """Consecutive indices whose lengths add up, rounded up to `multiple`, to at most `budget` (one
    row of packed sequences); an item longer than the budget gets a batch alone."""
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for index, length in enumerate(lengths):
        if current and rounded_up(total + length, multiple) > budget:
            batches.append(current)
            current, total = [], 0
        current.append(index)
        total += length
    if current:
        batches.append(current)
    return batches


# Texts at most this many characters per token of the limit are tokenized whole (nearly all of them).
CHARACTERS_PER_TOKEN = 8
# A letter followed by a space or tab: every pre-tokenizer below ends a word there (the space
# starts the next one), so the tokens before it never depend on the text after it.
_CUT_POINT = re.compile(r"(?<=[^\W\d_])[ \t]")
# Pre-tokenizers that may appear (all of them keep a word before a space apart from what follows).
_KNOWN_PRE_TOKENIZERS = {
    "ByteLevel", "BertPreTokenizer", "Whitespace", "WhitespaceSplit", "Metaspace", "Split", "Punctuation",
    "Digits",
}  # fmt: skip


def _splits_at_spaces(member: dict[str, Any]) -> bool:
    """Whether one pre-tokenizer ends words at spaces (Punctuation and Digits alone do not)."""
    kind = member.get("type")
    if kind == "ByteLevel":
        return bool(member.get("use_regex", True))
    if kind == "Metaspace":
        return bool(member.get("split", True))
    if kind == "Split":  # Qwen's and GPT-4's patterns: whitespace is a class of its own
        pattern = member.get("pattern", {})
        text = str(pattern.get("Regex", pattern.get("String", "")))
        return "\\s" in text or text == " "
    return kind in ("BertPreTokenizer", "Whitespace", "WhitespaceSplit")


def _splits_words_at_spaces(tokenizer: Any) -> bool:
    """Whether the tokenizer's pre-tokenizers are all of known kinds and one of them ends words at
    spaces (byte-level BPE, Qwen's regex, BERT's, SentencePiece's Metaspace); any other tokenizer,
    or one whose pre-tokenizer cannot be read, is never cut."""
    pre_tokenizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "pre_tokenizer", None)
    if pre_tokenizer is None:
        return False
    try:
        state = json.loads(pre_tokenizer.__getstate__())
    except Exception:  # a custom pre-tokenizer: cut nothing
        return False
    members = state.get("pretokenizers", [state])
    return all(m.get("type") in _KNOWN_PRE_TOKENIZERS for m in members) and any(
        map(_splits_at_spaces, members)
    )


def bounded_text(tokenizer: Any, text: str, tokens: int) -> str:
    """A prefix of `text` whose tokens are the first ones of the whole text, and more than `tokens`
    of them, so that a multi-megabyte document is never tokenized whole only to be cut to a few
    hundred tokens; the whole text when it is short or cannot be cut safely.

    The prefix ends after a letter followed by a space or tab, where the tokenizer's pre-tokenizer
    ends a word, so every token of it is a token of the whole text. It is taken once it holds more
    than `tokens` tokens (with room for the special tokens a caller adds); until then it doubles.
    """
    length = (tokens + 16) * CHARACTERS_PER_TOKEN
    if len(text) <= length or not _splits_words_at_spaces(tokenizer):
        return text
    while length < len(text):
        cut = _CUT_POINT.search(text, length)
        if cut is None:
            return text
        prefix = text[: cut.start()]
        # (verbose=False: transformers' "longer than the maximum length" warning; the cut is ours)
        if len(tokenizer(prefix, add_special_tokens=False, verbose=False)["input_ids"]) > tokens + 8:
            return prefix
        length = 2 * cut.start()
    return text


#: characters handed to the tokenizer in one call. A fast tokenizer holds a few hundred bytes a
#: character while it works (about 250 inside one long word of byte-level BPE), for every text of
#: the call at once, so multi-megabyte texts that `bounded_text` cannot cut (no space in them) are
#: tokenized one at a time, not all together: the peak is that of the longest text, whatever their
#: number. A call still holds thousands of ordinary passages.
TOKENIZER_CALL_CHARACTERS = 2**20


def character_groups(lengths: Sequence[int], budget: int | None = None) -> list[slice]:
    """Consecutive runs of texts with at most `budget` (TOKENIZER_CALL_CHARACTERS) characters in
    all, a longer text alone."""
    budget = TOKENIZER_CALL_CHARACTERS if budget is None else budget
    groups, start, total = [], 0, 0
    for index, length in enumerate(lengths):
        if index > start and total + length > budget:
            groups.append(slice(start, index))
            start, total = index, 0
        total += length
    if len(lengths) > start:
        groups.append(slice(start, len(lengths)))
    return groups


def tokenized(tokenizer: Any, texts: Sequence[str], keep: int, **options: Any) -> list[list[int]]:
    """The first `keep` token ids of each text (`options` go to the tokenizer): each text cut by
    `bounded_text` first, then tokenized in groups of `character_groups`, each group's ids cut to
    `keep` before the next group is tokenized. Only the ids are asked for: building the attention
    mask's lists is Python work holding the interpreter lock, which a background tokenizer takes
    from the thread queuing the GPU's work (a quarter of tokenizing's time, measured)."""
    bounded = [bounded_text(tokenizer, text, keep) for text in texts]
    ids: list[list[int]] = []
    for group in character_groups([len(text) for text in bounded]):
        encoded = tokenizer(bounded[group], verbose=False, return_attention_mask=False, **options)
        ids += [row[:keep] for row in encoded["input_ids"]]
    return ids


def rounded_up(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


def right_padded(
    rows: Sequence[Sequence[int]], pad_id: int, multiple: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask) with right padding: causal models keep every real position.
    The width is the longest row's length rounded up to `multiple` (fewer distinct shapes)."""
    width = rounded_up(max(len(row) for row in rows), multiple)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host-to-device copy from pinned memory, asynchronous on CUDA."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


#: keyword arguments of every model load (`from_pretrained`). transformers 5 swaps layers for
#: kernels fetched from the Hub at load time unless told not to: scores would then depend on what
#: was downloaded that day, and a machine without the `kernels` package fails to load at all. The
#: harness runs the checkpoint's own layers, or its own fused kernels where it has them.
MODEL_LOAD_OPTIONS: dict[str, Any] = {"use_kernels": False}


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars: keys a family ignores on purpose
    (a projector, an LM head, a pooler) are expected, and real problems surface as exceptions."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
