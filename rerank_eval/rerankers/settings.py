"""Each family's settings, declared once as a frozen dataclass: the names a preset or `--set` may
give, their types (checked before any model loads) and their defaults. A family's constructor
receives an instance; its manifest records what the run used.

Types mean: an `int` is a token count or size and must be a positive integer (a zero would cut
every text), a `bool` must be true or false, a `str` is text (a number is taken as its text; a
list, a mapping or true/false is refused, not written out as Python would). `None` keeps the default.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from rerank_eval.errors import UserError, did_you_mean
from rerank_eval.typed import is_kind, is_positive_integer


@dataclass(frozen=True)
class NoSettings:
    """A family with nothing to set (the first stage's order)."""


@dataclass(frozen=True)
class PointwiseSettings:
    max_length: int | None = None  # tokens per (query, document) pair; None: the family's default
    max_batch_tokens: int | None = None  # padded tokens per forward pass; None: per device


@dataclass(frozen=True)
class InstructedSettings(PointwiseSettings):
    instruction: str | None = None  # None: the model's published default instruction


@dataclass(frozen=True)
class ListwiseSettings:
    """The procedure's parameters; all of them are recorded in the run manifest."""

    max_query_length: int = 512
    max_doc_length: int = 2048
    block_size: int = 125
    #: the query's tokens taken from a block's capacity, per copy: 2 in v3's procedure (the prompt
    #: holds the query twice), 1 in jina-reranker-v3.5's reference ports (MLX, GGUF)
    block_query_copies: int = 2
    context_length: int | None = None  # None: the tokenizer's model_max_length (see load)
    instruction: str | None = None  # never used by the published procedure
    max_batch_tokens: int | None = None  # padded tokens per forward pass; None: per device
    fused_rms_norm: bool = True  # see qwen3_kernels.use_fused_rms_norm
    trim_last_layer: bool = True  # the last layer only at the marker positions (qwen3_kernels)
    compile_elementwise: bool | None = None  # torch.compile'd rotary and SiLU; None: on CUDA (qwen3_kernels)
    pad_multiple: int | None = None  # padded length rounded up to a multiple; None: per device
    pack_blocks: bool | None = None  # blocks concatenated in one row; None: with FlashAttention

    def __post_init__(self) -> None:
        """An instruction holding a special string would add a marker the prompt does not expect
        (the procedure removes them from queries and documents, not from a setting)."""
        from rerank_eval.rerankers.listwise.procedure import SPECIAL_STRINGS

        for special in SPECIAL_STRINGS:
            if self.instruction and special in self.instruction:
                raise UserError(
                    f"setting instruction of family listwise-last-token holds {special}, one of the "
                    f"prompt's special strings"
                )


#: the largest integer a setting takes: 16M tokens is past every model's context and any GPU's
#: batch, and a length or multiple beyond it would only size an allocation that fills memory
MAX_INTEGER_SETTING = 1 << 24


def _kind(annotation: Any) -> type:
    """int, bool or str: the type a setting's annotation names besides None."""
    options = [t for t in typing.get_args(annotation) or (annotation,) if t is not type(None)]
    return options[0]


def setting_names(settings: type) -> list[str]:
    return [field.name for field in dataclasses.fields(settings)]


def read_settings(settings: type, values: dict[str, Any], family: str) -> Any:
    """`values` as an instance of `settings`, refusing unknown names and values of the wrong type."""
    accepted = setting_names(settings)
    unknown = sorted(set(values) - set(accepted))
    if unknown:
        raise UserError(
            f"unknown setting {unknown[0]!r} for family {family}{did_you_mean(unknown[0], accepted)} "
            f"(accepted: {', '.join(sorted(accepted)) or 'none'})"
        )
    hints = typing.get_type_hints(settings)
    checked = dict(values)
    for name, value in values.items():
        if value is None:
            continue
        kind = _kind(hints[name])
        if kind is bool and not is_kind(value, bool):
            raise UserError(f"setting {name} of family {family} must be true or false, got {value!r}")
        if kind is int and not is_positive_integer(value):
            raise UserError(f"setting {name} of family {family} must be a positive integer, got {value!r}")
        if kind is int and value > MAX_INTEGER_SETTING:
            raise UserError(
                f"setting {name} of family {family} must be at most {MAX_INTEGER_SETTING:,}, got {value:,}"
            )
        if kind is str:
            if is_kind(value, bool) or not isinstance(value, (str, int, float)):
                raise UserError(f"setting {name} of family {family} must be text, got {value!r}"[:300])
            checked[name] = str(value)
    return settings(**checked)
