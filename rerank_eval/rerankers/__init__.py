"""Reranker families behind one interface, and `load_reranker` to get one by name or path."""

from __future__ import annotations

from typing import Any

from rerank_eval.config.reader import load_config
from rerank_eval.config.schema import BenchmarkConfig
from rerank_eval.errors import UserError
from rerank_eval.models.checkpoint import Checkpoint, model_checkpoint, resolve_checkpoint
from rerank_eval.rerankers import registry
from rerank_eval.rerankers.base import Reranker
from rerank_eval.rerankers.identify import model_family, refuse_a_mistyped_preset
from rerank_eval.rerankers.settings import read_settings


def model_files(name: str, config: BenchmarkConfig, revision: str | None = None) -> Checkpoint | None:
    """The model files `--model name` reads: a preset's installed package first, else its Hub id
    (downloaded when missing) or folder; None for a preset without model files (bm25). What a run
    loads, `fetch` gets and an offline run looks for."""
    preset = config.models.get(name)
    if preset is None:
        refuse_a_mistyped_preset(name, config)
        return resolve_checkpoint(name, revision)
    return model_checkpoint(preset.model, preset.package, revision) if preset.model else None


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
    identified = model_family(name_or_path, config, family, trust_remote_code)
    chosen = identified.family
    declared = registry.family(chosen)
    checked = read_settings(declared.settings, {**identified.preset_settings, **settings}, chosen)
    build = declared.implementation_class()
    if not declared.needs_model:
        reranker = build()
    else:
        if not identified.source:
            raise UserError(f"family {chosen} needs a model (hub id or checkpoint directory)")
        checkpoint = model_files(name_or_path, config, revision)
        assert checkpoint is not None  # a source was named
        extra = {"trust_remote_code": trust_remote_code} if declared.remote_code else {}
        reranker = build(checkpoint, device, dtype, settings=checked, **extra)
    reranker.name = name_or_path
    return reranker
