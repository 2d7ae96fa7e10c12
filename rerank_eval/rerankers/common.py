"""What every neural family shares: device and dtype choice, attention kernel, token-budget batches."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from rerank_eval.errors import UserError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


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
