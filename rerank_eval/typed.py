"""Whether a value read from a document (a YAML config, a JSON manifest or checkpoint file, a
setting) is of the kind asked for. JSON and YAML booleans are Python ints, and they give an integer
where a number is written without a point, so `isinstance` alone would take `true` for 1 and
refuse 2 as a number: every reader of typed values asks here instead."""

from __future__ import annotations

import math
from typing import Any

#: each kind as an error message says what was expected ("expected an integer, got 'x'")
KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}


def is_kind(value: Any, kind: type) -> bool:
    """A bool only where `kind` is bool; an int (never a bool) for int; a finite int or float for
    float; any other kind by isinstance."""
    if isinstance(value, bool) or kind is bool:
        return isinstance(value, bool) and kind is bool
    if kind is float:
        try:
            return isinstance(value, (int, float)) and math.isfinite(value)
        except OverflowError:  # an int beyond every float (JSON reads 400 digits as one)
            return False
    return isinstance(value, kind)


def is_positive_integer(value: Any) -> bool:
    """A count or a size: an int of at least 1 (never a bool, a float or a string)."""
    return is_kind(value, int) and value >= 1


#: a declared length of at least this declares none (transformers writes int(1e30) for "no limit")
NO_LENGTH_LIMIT = 10**9


def declared_length(value: Any) -> int | None:
    """The length limit a tokenizer or a model config declares (`model_max_length`,
    `max_position_embeddings`): a positive integer below NO_LENGTH_LIMIT, else None (none declared;
    a checkpoint's `true` would otherwise read as a limit of one token)."""
    return value if is_positive_integer(value) and value < NO_LENGTH_LIMIT else None
