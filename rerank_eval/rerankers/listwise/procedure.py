"""The published listwise procedure, as data and pure functions: special tokens, the system
prompt, the prompt of a block, how candidates are split into blocks, and how block vectors merge
into scores (../shared/specs/listwise-last-token.md in the project's workspace)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EMBED_TOKEN = "<|embed_token|>"
RERANK_TOKEN = "<|rerank_token|>"
SPECIAL_STRINGS = (EMBED_TOKEN, RERANK_TOKEN)
SYSTEM_PROMPT = (
    "You are a search relevance expert who can determine a ranking of the passages based on how "
    "relevant they are to the query. If the query is a question, how relevant a passage is "
    "depends on how well it answers the question. If not, try to analyze the intent of the query "
    "and assess how well each passage satisfies the intent. If an instruction is provided, you "
    "should follow the instruction when determining the ranking."
)
# Bumped whenever a change here can change a score, so cached scores are never reused across it.
SCORER_VERSION = "listwise-last-token/2"  # 2: special strings removed after truncation


def strip_special_strings(text: str) -> str:
    """Remove every occurrence of the two special-token strings, including ones a removal forms."""
    previous = None
    while previous != text:
        previous = text
        for special in SPECIAL_STRINGS:
            text = text.replace(special, "")
    return text


def build_prompt(query: str, docs: Sequence[str], instruction: str | None = None) -> str:
    """The published prompt for one block, byte for byte."""
    pieces = [
        "<|im_start|>system\n",
        SYSTEM_PROMPT,
        "<|im_end|>\n<|im_start|>user\n",
        f"I will provide you with {len(docs)} passages, each indicated by a numerical identifier. "
        f"Rank the passages based on their relevance to query: {query}\n",
    ]
    if instruction:
        pieces.append(f"<instruct>\n{instruction}\n</instruct>\n")
    pieces.append(
        "\n".join(f'<passage id="{i}">\n{doc}{EMBED_TOKEN}\n</passage>' for i, doc in enumerate(docs))
    )
    pieces.append("\n")
    pieces.append(f"<query>\n{query}{RERANK_TOKEN}\n</query>")
    pieces.append("<|im_end|>\n<|im_start|>assistant\n")
    pieces.append("<think>\n\n</think>\n\n")
    return "".join(pieces)


def plan_blocks(
    doc_lengths: Sequence[int],
    query_length: int,
    context_length: int,
    max_doc_length: int,
    block_size: int,
    query_copies: int = 2,
) -> list[range]:
    """Split documents (in input order) into blocks by the published capacity rule: a block's
    capacity is the context less `query_copies` times the query (v3 counts both of the prompt's
    copies; v3.5's reference ports count one), and it closes once what is left is at most one
    document's length."""
    blocks: list[range] = []
    start = 0
    full = context_length - query_copies * query_length
    capacity = full
    for index, length in enumerate(doc_lengths):
        capacity -= length
        if index + 1 - start >= block_size or capacity <= max_doc_length:
            blocks.append(range(start, index + 1))
            start = index + 1
            capacity = full
    if start < len(doc_lengths):
        blocks.append(range(start, len(doc_lengths)))
    return blocks


def merge_blocks(doc_vectors: Sequence[np.ndarray], query_vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Final scores from per-block projected vectors: cosine with the weighted mean query vector.

    Block weight = max over its documents of (1 + block score) / 2. Computed in float64.
    """

    def cosine(docs: np.ndarray, query: np.ndarray) -> np.ndarray:
        denominator = np.linalg.norm(docs, axis=1) * np.linalg.norm(query)
        return (docs @ query) / np.maximum(denominator, np.finfo(np.float64).tiny)

    docs64 = [d.astype(np.float64) for d in doc_vectors]
    queries64 = [q.astype(np.float64) for q in query_vectors]
    weights = np.array([np.max((1.0 + cosine(d, q)) / 2.0) for d, q in zip(docs64, queries64)])
    if weights.sum() <= 0:  # every block scored -1 everywhere: fall back to equal weights
        weights = np.ones_like(weights)
    query = (weights[:, None] * np.stack(queries64)).sum(axis=0) / weights.sum()
    return cosine(np.concatenate(docs64), query)
