"""The first-stage kinds, each registered once by its own module (as ir_measures' providers are).

`kind(name)` gives a kind by its `kind:` name; `resolve(name, first_stages)` turns what a user
typed after `--first-stage` (a first_stages entry, or `KIND:ARGUMENT` such as
`dense:BAAI/bge-base-en-v1.5`) into the source to use; `with_settings` changes some of its
settings (`--first-stage-set`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from rerank_eval.errors import ParameterError, UserError, closest, term
from rerank_eval.first_stage.base import unknown_setting_hint
from rerank_eval.textlines import DIRECTION_CONTROLS

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


def with_settings(source: FirstStageSpec, values: Mapping[str, Any]) -> FirstStageSpec:
    """`source` with some of its settings replaced (`--first-stage-set NAME=VALUE`: text, read as
    each setting's type; other values are checked as a config's are).

    A replaced setting that decides which run it is (an encoder's max_length, BM25's k1) names a
    first stage of its own: the entry's name and label with the changes, and no published figure,
    as those were measured with the entry's settings. One that changes only how the run is
    computed (`execution_only`: batching, precision) keeps the entry's name and figures, and is
    shown in the label. Every value is in the settings, so the manifest records them all.
    """
    try:
        return _with_settings(source, values)
    except ParameterError:
        raise
    except UserError as error:
        raise ParameterError("first_stage_settings", str(error)) from None


def _with_settings(source: FirstStageSpec, values: Mapping[str, Any]) -> FirstStageSpec:
    schema = kind(source.kind).settings
    typed = {}
    for name, value in values.items():
        if name not in schema:
            raise ParameterError(
                "first_stage_settings",
                f"{name}: {source.name} (kind {source.kind}) has no such setting"
                f"{unknown_setting_hint(name, schema)}",
            )
        setting = schema[name]
        typed[name] = setting.parse(name, value) if isinstance(value, str) else setting.check(name, value)
    changed = {name: value for name, value in typed.items() if value != source.settings.get(name)}
    if not changed:
        return source
    settings = kind(source.kind).validate(source.name, kind(source.kind).changed(source.settings, changed))
    defining = {name: value for name, value in changed.items() if not schema[name].execution_only}
    return replace(
        source,
        name=f"{source.name} ({_listed(defining)})" if defining else source.name,
        label=f"{source.label}, {_listed(changed)}",
        reference=() if defining else source.reference,
        settings=settings,
        fallback=None,
    )


def _listed(values: Mapping[str, Any]) -> str:
    """NAME=VALUE, ... in name order, each value as YAML would write it (text quoted, so that a
    prefix's spaces show; text-direction marks escaped, as JSON escapes control characters, so that
    a value cannot reorder the title or run tag it is printed in)."""

    def written(value: Any) -> str:
        text = json.dumps(value, ensure_ascii=False)
        return DIRECTION_CONTROLS.sub(lambda mark: f"\\u{ord(mark.group()):04x}", text)

    return ", ".join(f"{name}={written(values[name])}" for name in sorted(values))
