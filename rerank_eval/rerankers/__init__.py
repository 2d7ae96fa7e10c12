"""Reranker families behind one interface, and `load_reranker` to get one by name or path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rerank_eval.config.reader import load_config
from rerank_eval.config.schema import BenchmarkConfig
from rerank_eval.errors import UserError, did_you_mean, term
from rerank_eval.rerankers import registry
from rerank_eval.rerankers.base import Reranker
from rerank_eval.rerankers.checkpoint import (
    Checkpoint,
    architectures,
    model_checkpoint,
    not_a_model_source,
    resolve_checkpoint,
)
from rerank_eval.rerankers.registry import FAMILIES
from rerank_eval.rerankers.settings import read_settings


def _detect_family(source: str, config: BenchmarkConfig) -> tuple[str, dict[str, Any], str] | None:
    """Family, preset settings and how it is known, of a model given by Hub id or directory instead
    of a preset: a preset's own model, or a folder whose files say (None where nothing does)."""
    for preset in config.models.values():
        if preset.model == source:
            return preset.family, dict(preset.settings), f"the model of preset {preset.name}"
    path = Path(source).expanduser()
    names = architectures(path) if path.is_dir() else []
    if "JinaForRanking" in names:
        return "listwise-last-token", {}, "its config names JinaForRanking"
    classifiers = [name for name in names if name.endswith("ForSequenceClassification")]
    if classifiers:
        return "cross-encoder", {}, f"its config names {classifiers[0]}"
    if path.is_dir() and (path / "modules.json").is_file():
        return "bi-encoder", {}, "it is a sentence-transformers folder (modules.json)"
    return None


def _family_to_use(name: str, known: str | None, how: str, requested: str | None) -> str | None:
    """The family a model runs as: `--family` names it where nothing else does; where the model's
    own is known, `--family` must agree (running a bi-encoder as a cross-encoder would score with
    a head of random weights), except for a model without weights (bm25), which keeps its order
    beside the models `--family` is for."""
    if requested is None or known is None or known == requested:
        return known or requested
    if not registry.family(known).needs_model:
        return known
    raise UserError(
        f"model {name!r} is a {known} model ({how}); {term('family')} {requested} would run it as "
        f"another kind: leave {term('family')} out for it (give other models their own command)",
        {"family": "family"},
    )


def _cannot_tell(source: str, config: BenchmarkConfig) -> None:
    _refuse_a_mistyped_preset(source, config)
    problem = not_a_model_source(source)
    if problem:  # a folder that is not there: not a question of family
        raise UserError(problem)
    raise UserError(
        f"cannot tell which family model {source!r} belongs to; pass {term('family')} "
        f"({', '.join(FAMILIES)}) or use a preset ({', '.join(sorted(config.models))})",
        {"family": "family"},
    )


def _refuse_a_mistyped_preset(name: str, config: BenchmarkConfig) -> None:
    """A name close to a preset's, with no folder of that name: a typo, not a model to look for. A
    Hub id (ORG/NAME, such as a preset's own `jinaai/jina-reranker-v3`) is never one."""
    if "/" in name or Path(name).expanduser().exists():
        return
    typo = did_you_mean(name, config.models, cutoff=0.75)
    if typo:
        raise UserError(f"unknown model {name!r}: no preset of that name{typo} and no such folder")


def model_files(name: str, config: BenchmarkConfig, revision: str | None = None) -> Checkpoint | None:
    """The model files `--model name` reads: a preset's installed package first, else its Hub id
    (downloaded when missing) or folder; None for a preset without model files (bm25). What a run
    loads, `fetch` gets and an offline run looks for."""
    preset = config.models.get(name)
    if preset is None:
        _refuse_a_mistyped_preset(name, config)
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
    preset = config.models.get(name_or_path)
    if preset is not None:
        source, known, preset_settings = preset.model, preset.family, dict(preset.settings)
        how = f"preset {preset.name}"
        if preset.trust_remote_code and not trust_remote_code:
            raise UserError(
                f"preset {preset.name} runs code from its Hub repository ({preset.model}); "
                f"pass {term('trust_remote_code')} to allow it",
                {"trust_remote_code": "trust_remote_code=True"},
            )
    else:
        source = name_or_path
        detected = _detect_family(name_or_path, config)
        known, preset_settings, how = detected or (None, {}, "")
        if detected is None and family is None:
            _cannot_tell(name_or_path, config)
    chosen = _family_to_use(name_or_path, known, how, family)
    assert chosen is not None  # (refused above otherwise)
    declared = registry.family(chosen)
    checked = read_settings(declared.settings, {**preset_settings, **settings}, chosen)
    build = declared.implementation_class()
    if not declared.needs_model:
        reranker = build()
    else:
        if not source:
            raise UserError(f"family {chosen} needs a model (hub id or checkpoint directory)")
        checkpoint = model_files(name_or_path, config, revision)
        assert checkpoint is not None  # a source was named
        extra = {"trust_remote_code": trust_remote_code} if declared.remote_code else {}
        reranker = build(checkpoint, device, dtype, settings=checked, **extra)
    reranker.name = name_or_path
    return reranker
