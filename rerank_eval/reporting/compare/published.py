"""Published figures (`rerank_eval/published/*.json`), shown beside runs: marked, never tested."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rerank_eval.errors import UserError, did_you_mean

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
    """The packaged figures named `name`: a name from the list, never a path (`../x` or `/x` would
    reach any .json file)."""
    known = published_names()
    if name not in known:
        raise UserError(
            f"no published results named {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}"
        )
    data = json.loads((PUBLISHED_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return PublishedColumn(
        label=f"{data['name']} (published)",
        source=data["source"],
        first_stage=data["first_stage"],
        rows=dict(data["rows"].get(metric, {})),
        averages=dict(data["averages"].get(metric, {})),
        first_stage_name=data.get("first_stage_name"),
        top_k=data.get("top_k"),
    )
