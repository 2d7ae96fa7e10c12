"""Reranker families behind one interface, and `load_reranker` to get one by name or path."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rerank_eval.config.reader import load_config
from rerank_eval.config.schema import BenchmarkConfig, ModelPreset
from rerank_eval.errors import UserError
from rerank_eval.rerankers.base import Reranker, RerankRequest
from rerank_eval.rerankers.checkpoint import (
    Checkpoint,
    architectures,
    packaged_checkpoint,
    resolve_checkpoint,
)

POINTWISE_SETTINGS = {"max_length", "max_batch_tokens"}
# family -> (settings it accepts, "module:class")
FAMILIES: dict[str, tuple[set[str], str]] = {
    "listwise-last-token": (
        {
            "max_query_length",
            "max_doc_length",
            "block_size",
            "context_length",
            "instruction",
            "max_batch_tokens",
            "fused_rms_norm",
            "trim_last_layer",
            "compile_elementwise",
            "pad_multiple",
            "pack_blocks",
        },
        "rerank_eval.rerankers.listwise:ListwiseLastToken",
    ),
    "cross-encoder": (POINTWISE_SETTINGS, "rerank_eval.rerankers.cross_encoder:CrossEncoder"),
    "yes-no": (POINTWISE_SETTINGS | {"instruction"}, "rerank_eval.rerankers.causal_lm:YesNoReranker"),
    "one-zero": (POINTWISE_SETTINGS, "rerank_eval.rerankers.causal_lm:OneZeroReranker"),
    "bi-encoder": (POINTWISE_SETTINGS, "rerank_eval.rerankers.bi_encoder:BiEncoder"),
    "first-stage-order": (set(), "rerank_eval.rerankers.first_stage_order:FirstStageOrder"),
}
REMOTE_CODE_FAMILIES = {"cross-encoder", "yes-no", "one-zero", "bi-encoder"}
# Token counts and sizes; None keeps the default. A zero or negative one would cut every text.
POSITIVE_INTEGER_SETTINGS = {
    "max_query_length", "max_doc_length", "block_size", "context_length", "max_batch_tokens", "max_length",
    "pad_multiple",
}  # fmt: skip
BOOLEAN_SETTINGS = {"fused_rms_norm", "trim_last_layer", "compile_elementwise", "pack_blocks"}


def _checked_settings(settings: dict[str, Any], family: str) -> dict[str, Any]:
    """Settings of the right type, checked before any model is loaded; `instruction` is text."""
    checked = dict(settings)
    for name, value in settings.items():
        if value is None:
            continue
        positive_integer = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        if name in POSITIVE_INTEGER_SETTINGS and not positive_integer:
            raise UserError(f"setting {name} of family {family} must be a positive integer, got {value!r}")
        if name in BOOLEAN_SETTINGS and not isinstance(value, bool):
            raise UserError(f"setting {name} of family {family} must be true or false, got {value!r}")
        if name == "instruction":
            checked[name] = str(value)
    return checked


def _family_class(family: str) -> Callable[..., Reranker]:
    module, name = FAMILIES[family][1].split(":")
    return getattr(importlib.import_module(module), name)


def _detect_family(source: str, config: BenchmarkConfig) -> tuple[str, dict[str, Any]]:
    """Family and preset settings of a model given by hub id or directory instead of preset."""
    for preset in config.models.values():
        if preset.model == source:
            return preset.family, dict(preset.settings)
    path = Path(source).expanduser()
    names = architectures(path) if path.is_dir() else []
    if "JinaForRanking" in names:
        return "listwise-last-token", {}
    if any(name.endswith("ForSequenceClassification") for name in names):
        return "cross-encoder", {}
    raise UserError(
        f"cannot tell which family model {source!r} belongs to; pass --family "
        f"({', '.join(FAMILIES)}) or use a preset ({', '.join(sorted(config.models))})"
    )


def _packaged_checkpoint(preset: ModelPreset) -> Checkpoint | None:
    """The preset's model files from an installed package that ships them, if it is installed."""
    return packaged_checkpoint(preset.package, preset.model) if preset.package else None


def load_reranker(
    name_or_path: str,
    device: str | None = None,
    dtype: str | None = None,
    *,
    family: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    config: BenchmarkConfig | None = None,
    **settings: Any,
) -> Reranker:
    """A ready reranker from a preset name, a hub id or a local checkpoint directory.

    `settings` override the preset's (e.g. `max_doc_length=1024`); `device` and `dtype` default to
    CUDA with bfloat16 when available, else CPU with float32. Models whose Hub repository needs
    its own code load only with `trust_remote_code=True`.
    """
    config = config or load_config()
    preset = config.models.get(name_or_path)
    checkpoint = None
    if preset is not None:
        source, chosen, preset_settings = preset.model, preset.family, dict(preset.settings)
        if preset.trust_remote_code and not trust_remote_code:
            raise UserError(
                f"preset {preset.name} runs code from its Hub repository ({preset.model}); "
                f"pass --trust-remote-code to allow it"
            )
        checkpoint = _packaged_checkpoint(preset)
    else:
        source = name_or_path
        chosen, preset_settings = (family, {}) if family else _detect_family(name_or_path, config)
    chosen = family or chosen
    if chosen not in FAMILIES:
        raise UserError(f"unknown reranker family {chosen!r}; known: {', '.join(FAMILIES)}")
    merged = {**preset_settings, **settings}
    accepted = FAMILIES[chosen][0]
    unknown = sorted(set(merged) - accepted)
    if unknown:
        raise UserError(
            f"unknown setting {unknown[0]!r} for family {chosen} "
            f"(accepted: {', '.join(sorted(accepted)) or 'none'})"
        )
    merged = _checked_settings(merged, chosen)
    build = _family_class(chosen)
    if chosen == "first-stage-order":
        reranker = build()
    else:
        if not source:
            raise UserError(f"family {chosen} needs a model (hub id or checkpoint directory)")
        checkpoint = checkpoint or resolve_checkpoint(source, revision)
        extra = {"trust_remote_code": trust_remote_code} if chosen in REMOTE_CODE_FAMILIES else {}
        reranker = build(checkpoint, device, dtype, **extra, **merged)
    reranker.name = name_or_path
    return reranker


__all__ = ["FAMILIES", "RerankRequest", "Reranker", "load_reranker"]
