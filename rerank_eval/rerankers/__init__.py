"""Reranker families behind one interface, and `load_reranker` to get one by name or path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rerank_eval.config import BenchmarkConfig, load_config
from rerank_eval.errors import UserError
from rerank_eval.rerankers.base import Reranker, RerankRequest

FAMILIES = ("listwise-last-token", "first-stage-order")
LISTWISE_ARCHITECTURES = ("JinaForRanking",)


def _detect_family(source: str, config: BenchmarkConfig) -> tuple[str, dict[str, Any]]:
    """Family and preset settings of a model given by hub id or directory instead of preset."""
    for preset in config.models.values():
        if preset.model == source:
            return preset.family, dict(preset.settings)
    from rerank_eval.rerankers.checkpoint import architectures

    path = Path(source).expanduser()
    if path.is_dir() and set(architectures(path)) & set(LISTWISE_ARCHITECTURES):
        return "listwise-last-token", {}
    raise UserError(
        f"cannot tell which family model {source!r} belongs to; pass --family "
        f"({', '.join(FAMILIES)}) or use a preset ({', '.join(sorted(config.models))})"
    )


def load_reranker(
    name_or_path: str,
    device: str | None = None,
    dtype: str | None = None,
    *,
    family: str | None = None,
    revision: str | None = None,
    config: BenchmarkConfig | None = None,
    **settings: Any,
) -> Reranker:
    """A ready reranker from a preset name, a hub id or a local checkpoint directory.

    `settings` override the preset's (e.g. `max_doc_length=1024`); `device` and `dtype` default to
    CUDA with bfloat16 when available, else CPU with float32.
    """
    config = config or load_config()
    preset = config.models.get(name_or_path)
    if preset is not None:
        source, chosen_family, preset_settings = preset.model, preset.family, dict(preset.settings)
    else:
        source = name_or_path
        chosen_family, preset_settings = (family, {}) if family else _detect_family(name_or_path, config)
    chosen_family = family or chosen_family
    merged = {**preset_settings, **settings}
    reranker = _build(chosen_family, source, device, dtype, revision, merged)
    reranker.name = name_or_path
    return reranker


def _build(
    family: str,
    source: str | None,
    device: str | None,
    dtype: str | None,
    revision: str | None,
    settings: dict[str, Any],
) -> Reranker:
    if family == "first-stage-order":
        from rerank_eval.rerankers.first_stage_order import FirstStageOrder

        return FirstStageOrder()
    if family not in FAMILIES:
        raise UserError(f"unknown reranker family {family!r}; known: {', '.join(FAMILIES)}")
    if not source:
        raise UserError(f"family {family} needs a model (hub id or checkpoint directory)")
    from rerank_eval.rerankers.checkpoint import resolve_checkpoint
    from rerank_eval.rerankers.listwise import ListwiseLastToken

    return ListwiseLastToken(resolve_checkpoint(source, revision), device, dtype, **settings)


__all__ = ["FAMILIES", "RerankRequest", "Reranker", "load_reranker"]
