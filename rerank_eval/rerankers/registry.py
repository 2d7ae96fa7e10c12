"""The reranker families, each declared once: its name, its settings (a dataclass of
`settings.py`), the class that implements it (imported only when a model of the family loads, so
listing families costs no torch import), how it knows a checkpoint folder for its own
(`recognize.py`) and whether it may run a model repository's own code.

Adding a family: its module, a settings dataclass if it has new settings, and one `register` line.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerank_eval.errors import UserError
from rerank_eval.rerankers import recognize
from rerank_eval.rerankers.settings import (
    InstructedSettings,
    ListwiseSettings,
    NoSettings,
    PointwiseSettings,
)


@dataclass(frozen=True)
class Family:
    name: str
    settings: type
    implementation: str  # "module:class"
    remote_code: bool = False  # may run the code a model's Hub repository ships (--trust-remote-code)
    needs_model: bool = True  # False: it scores without weights (the first stage's order)
    #: every document of a query is scored in one call (each listwise block's query vector enters
    #: every score), so they cannot be scored in slices
    scores_a_query_whole: bool = False
    #: how it knows a checkpoint folder for its own from its files ("its config names ..."), or
    #: None; asked in the families' order of registration (`identify.py`)
    recognizes: Callable[[Path], str | None] | None = None

    def implementation_class(self) -> Any:
        module, name = self.implementation.split(":")
        return getattr(importlib.import_module(module), name)


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise UserError(f"unknown reranker family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


_MODULE = "rerank_eval.rerankers."
register(
    Family(
        "listwise-last-token",
        ListwiseSettings,
        _MODULE + "listwise.reranker:ListwiseLastToken",
        scores_a_query_whole=True,
        recognizes=recognize.jina_for_ranking,
    )
)
register(
    Family(
        "cross-encoder",
        PointwiseSettings,
        _MODULE + "cross_encoder:CrossEncoder",
        remote_code=True,
        recognizes=recognize.sequence_classifier,
    )
)
register(Family("yes-no", InstructedSettings, _MODULE + "causal_lm:YesNoReranker", remote_code=True))
register(Family("one-zero", PointwiseSettings, _MODULE + "causal_lm:OneZeroReranker", remote_code=True))
register(
    Family(
        "bi-encoder",
        PointwiseSettings,
        _MODULE + "bi_encoder:BiEncoder",
        remote_code=True,
        recognizes=recognize.sentence_transformers_embedder,
    )
)
register(
    Family("first-stage-order", NoSettings, _MODULE + "first_stage_order:FirstStageOrder", needs_model=False)
)
