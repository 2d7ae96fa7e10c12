"""Which family a `--model` runs as, told from what it is before anything loads: a preset says
its own; a Hub id that is a preset's model, that preset's; a folder, its files, as the family
that recognises them says (`recognize.py`: `JinaForRanking` or a `*ForSequenceClassification` in
config.json; sentence-transformers' own layout, a bi-encoder);
`--family` names it where nothing else does and must agree where something does. A run checks
every model of its command this way before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerank_eval.config.schema import BenchmarkConfig
from rerank_eval.errors import UserError, did_you_mean, term
from rerank_eval.models.checkpoint import not_a_model_source
from rerank_eval.rerankers import registry
from rerank_eval.rerankers.registry import FAMILIES


@dataclass(frozen=True)
class ModelFamily:
    family: str
    #: the Hub id or folder the weights come from (None for a preset without weights: bm25)
    source: str | None
    preset_settings: dict[str, Any] = field(default_factory=dict)


def model_family(
    name: str, config: BenchmarkConfig, family: str | None = None, trust_remote_code: bool = False
) -> ModelFamily:
    """The family `name` (a preset, Hub id or folder) runs as, with the preset's settings."""
    if family is not None:
        registry.family(family)  # a mistyped family is said as such, before any comparison
    preset, how = config.models.get(name), f"preset {name}"
    if preset is None:  # a Hub id that is a preset's model: that preset's family, settings and code
        preset = next((known for known in config.models.values() if known.model == name), None)
        how = f"the model of preset {preset.name}" if preset else how
    if preset is not None:
        if preset.trust_remote_code and not trust_remote_code:
            raise UserError(
                f"{how} runs code from its Hub repository ({preset.model}); "
                f"pass {term('trust_remote_code')} to allow it",
                {"trust_remote_code": "trust_remote_code=True"},
            )
        chosen = _agreed(name, preset.family, how, family)
        return ModelFamily(chosen, preset.model, dict(preset.settings))
    detected = _detected(name)
    if detected is None:
        if family is None:
            _cannot_tell(name, config)
        return ModelFamily(str(family), name)
    known, how = detected
    return ModelFamily(_agreed(name, known, how, family), name)


def _detected(source: str) -> tuple[str, str] | None:
    """Family and how it is known, of a model given by a folder whose files say (None where
    nothing does)."""
    path = Path(source).expanduser()
    if not path.is_dir():
        return None
    for known in FAMILIES.values():  # (in their order of registration)
        how = known.recognizes(path) if known.recognizes else None
        if how:
            return known.name, how
    return None


def _agreed(name: str, known: str, how: str, requested: str | None) -> str:
    """`known`, which `--family` must agree with (a bi-encoder run as a cross-encoder would score
    with a head of random weights), except for a model without weights (bm25), which keeps its
    order beside the models `--family` is for."""
    if requested is None or known == requested or not registry.family(known).needs_model:
        return known
    raise UserError(
        f"model {name!r} is a {known} model ({how}); {term('family')} {requested} would run it as "
        f"another kind: leave {term('family')} out, or give models of other families a command of "
        f"their own",
        {"family": "family"},
    )


def _cannot_tell(source: str, config: BenchmarkConfig) -> None:
    refuse_a_mistyped_preset(source, config)
    problem = not_a_model_source(source)
    if problem:  # a folder that is not there: not a question of family
        raise UserError(problem)
    raise UserError(
        f"cannot tell which family model {source!r} belongs to; pass {term('family')} "
        f"({', '.join(FAMILIES)}) or use a preset ({', '.join(sorted(config.models))})",
        {"family": "family"},
    )


def refuse_a_mistyped_preset(name: str, config: BenchmarkConfig) -> None:
    """A name close to a preset's, with no folder of that name: a typo, not a model to look for. A
    Hub id (ORG/NAME, such as a preset's own `jinaai/jina-reranker-v3`) is never one."""
    if "/" in name or Path(name).expanduser().exists():
        return
    typo = did_you_mean(name, config.models, cutoff=0.75)
    if typo:
        raise UserError(f"unknown model {name!r}: no preset of that name{typo} and no such folder")
