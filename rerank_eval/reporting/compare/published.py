"""Published figures (`rerank_eval/published/*.json`), shown beside runs: marked, never tested."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rerank_eval.errors import UserError

PUBLISHED_DIR = Path(__file__).resolve().parents[2] / "published"


@dataclass
class PublishedColumn:
    label: str
    source: str
    first_stage: str
    rows: dict[str, float]
    averages: dict[str, float]
    #: the first_stages entry that reproduces its candidates (e.g. jina-embeddings-v3), when known
    first_stage_name: str | None = None
    top_k: int | None = None  # how many of the first stage's results it reranked, when known


def published_names() -> list[str]:
    return sorted(p.stem for p in PUBLISHED_DIR.glob("*.json"))


def load_published(name: str, metric: str) -> PublishedColumn:
    path = PUBLISHED_DIR / f"{name}.json"
    if not path.exists():
        raise UserError(f"no published results named {name!r}; known: {', '.join(published_names())}")
    data = json.loads(path.read_text(encoding="utf-8"))
    return PublishedColumn(
        label=f"{data['name']} (published)",
        source=data["source"],
        first_stage=data["first_stage"],
        rows=dict(data["rows"].get(metric, {})),
        averages=dict(data["averages"].get(metric, {})),
        first_stage_name=data.get("first_stage_name"),
        top_k=data.get("top_k"),
    )
