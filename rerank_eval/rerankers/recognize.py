"""How a family knows a checkpoint folder for one of its own from the folder's files alone, before
anything loads: each returns how it knows ("its config names ...") or None. A family declares its
recogniser where it registers (`registry.Family.recognizes`); families are asked in their order
of registration, so a classifier saved in sentence-transformers' layout is a cross-encoder first."""

from __future__ import annotations

from pathlib import Path

from rerank_eval.first_stage.dense.checkpoint_files import read_object
from rerank_eval.models.checkpoint import architectures


def jina_for_ranking(folder: Path) -> str | None:
    """jina-reranker-v3's own architecture (and v3.5's, which keeps its name)."""
    return "its config names JinaForRanking" if "JinaForRanking" in architectures(folder) else None


def sequence_classifier(folder: Path) -> str | None:
    """A `*ForSequenceClassification` head: a cross-encoder's score is that head's logit."""
    names = [name for name in architectures(folder) if name.endswith("ForSequenceClassification")]
    return f"its config names {names[0]}" if names else None


def sentence_transformers_embedder(folder: Path) -> str | None:
    """A folder sentence-transformers saved a SentenceTransformer (embedding model) in: its
    modules.json, and no other `model_type` (a CrossEncoder or SparseEncoder is saved in the same
    layout; sentence-transformers writes the type, and its absence means SentenceTransformer)."""
    if not (folder / "modules.json").is_file():
        return None
    settings = folder / "config_sentence_transformers.json"
    # (one that cannot be read is said as such, not as a folder of no family anyone can tell)
    declared = read_object(settings, "sentence-transformers settings") if settings.is_file() else {}
    if declared.get("model_type") not in (None, "SentenceTransformer"):
        return None
    return "it is a sentence-transformers embedding model (modules.json)"
