"""The first-stage kinds, each registered once by its own module (as ir_measures' providers are).

`kind(name)` gives a kind by its `kind:` name; `resolve(name, first_stages)` turns what a user
typed after `--first-stage` (a first_stages entry, or `KIND:ARGUMENT` such as
`dense:BAAI/bge-base-en-v1.5`) into the source to use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rerank_eval.errors import UserError, closest, term

if TYPE_CHECKING:
    from rerank_eval.config.schema import FirstStageSpec
    from rerank_eval.first_stage.base import FirstStageKind

_KINDS: dict[str, FirstStageKind] = {}


def register(kind: FirstStageKind) -> FirstStageKind:
    if kind.name in _KINDS:
        raise ValueError(f"first stage kind {kind.name!r} is registered twice")
    _KINDS[kind.name] = kind
    return kind


def _load_kinds() -> None:
    # Importing the package imports every kind module, and each registers itself.
    import rerank_eval.first_stage  # noqa: F401


def kind_names() -> list[str]:
    _load_kinds()
    return sorted(_KINDS)


def kind(name: str) -> FirstStageKind:
    _load_kinds()
    if name not in _KINDS:
        raise UserError(f"unknown first stage kind {name!r}; known: {', '.join(sorted(_KINDS))}")
    return _KINDS[name]


def resolve(name: str, first_stages: dict[str, FirstStageSpec]) -> FirstStageSpec:
    """A first_stages entry by name, or the source a `KIND:ARGUMENT` form describes."""
    if name in first_stages:
        return first_stages[name]
    prefix, separator, argument = name.partition(":")
    if separator and argument:
        return kind(prefix).from_argument(argument, first_stages)
    close = closest(name, first_stages)
    hint = f"; did you mean {close!r}?" if close else ""
    raise UserError(
        f"{term('first_stage')}: unknown first stage {name!r}{hint} "
        f"(entries: {', '.join(sorted(first_stages))}; or KIND:ARGUMENT, e.g. dense:BAAI/bge-base-en-v1.5)",
        {"first_stage": "first_stage"},
    )
