"""The prompts of `ListwiseLastToken`, as the published procedure builds them: queries and documents
truncated on the texts as given (each distinct document tokenized once per dataset), documents
planned into blocks, each block's prompt built, tokenized and its markers found."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rerank_eval.models.common import tokenized
from rerank_eval.rerankers.base import RerankRequest
from rerank_eval.rerankers.listwise.execution import Block
from rerank_eval.rerankers.listwise.procedure import build_prompt, plan_blocks, strip_special_strings
from rerank_eval.rerankers.settings import ListwiseSettings

# Distinct documents whose truncation is remembered; beyond it the memory is cleared (API users
# scoring an endless stream of documents never see it grow without bound).
DOCUMENT_CACHE_LIMIT = 2_000_000


class BlockPrompts:
    """Prompt building for `ListwiseLastToken` (a mixin: it reads the reranker's tokenizer,
    settings, marker token ids, truncation memory and statistics)."""

    tokenizer: Any
    settings: ListwiseSettings
    embed_id: int
    rerank_id: int
    _documents: dict[str, tuple[str, int]]
    _stats: dict[str, int]

    def _truncate(self, texts: list[str], limit: int) -> tuple[list[str], list[int]]:
        """Cut texts of `limit` tokens or more to `limit` tokens (text replaced by their decoding).

        Returns the texts and their token counts (a count equal to `limit` means cut).
        """
        encoded = tokenized(self.tokenizer, texts, limit, add_special_tokens=False)
        cut_texts, lengths = [], []
        for text, ids in zip(texts, encoded):
            if len(ids) >= limit:
                text = self.tokenizer.decode(ids)
            cut_texts.append(text)
            lengths.append(len(ids))
        return cut_texts, lengths

    def _truncated_documents(self, texts: list[str]) -> tuple[list[str], list[int]]:
        """Truncated texts and token counts, each distinct document tokenized once per dataset
        (BEIR candidates recur across the queries of a dataset)."""
        cache = self._documents
        distinct = list(dict.fromkeys(texts))
        if len(cache) + len(distinct) > DOCUMENT_CACHE_LIMIT:
            cache.clear()  # before looking up: every text of this call stays answerable
        new = [t for t in distinct if t not in cache]
        if new:
            for text, cut, length in zip(new, *self._truncate(new, self.settings.max_doc_length)):
                cache[text] = (cut, length)
        entries = [cache[t] for t in texts]
        return [cut for cut, _ in entries], [length for _, length in entries]

    def _prompts(self, requests: Sequence[RerankRequest]) -> list[tuple[int, range, str]]:
        """(request index, documents of the block, prompt) for every block, in input order.

        As in the published procedure, truncation (and so every length the block rule uses) works
        on the texts as given; the special-token strings are removed when a block's prompt is built.
        """
        s = self.settings
        queries, query_lengths = self._truncate([r.query for r in requests], s.max_query_length)
        queries = [strip_special_strings(q) for q in queries]
        docs, doc_lengths = self._truncated_documents([t for r in requests for t in r.texts])
        docs = [strip_special_strings(d) for d in docs]
        self._stats["truncated_documents"] += sum(1 for n in doc_lengths if n >= s.max_doc_length)
        prompts: list[tuple[int, range, str]] = []
        offset = 0
        for index, request in enumerate(requests):
            count = len(request.texts)
            lengths = doc_lengths[offset : offset + count]
            for block in plan_blocks(
                lengths, query_lengths[index], s.context_length, s.max_doc_length, s.block_size,
                s.block_query_copies,
            ):  # fmt: skip
                texts = [docs[offset + i] for i in block]
                prompts.append((index, block, build_prompt(queries[index], texts, s.instruction)))
            offset += count
        return prompts

    def block_prompts(self, query: str, docs: Sequence[str]) -> list[str]:
        """The prompts the model sees for one query, one per block (for inspection and tests)."""
        request = RerankRequest(
            "query", query, tuple(map(str, range(len(docs)))), tuple(docs), tuple(range(len(docs)))
        )
        return [prompt for _, _, prompt in self._prompts([request])]

    def _blocks(self, requests: Sequence[RerankRequest]) -> list[Block]:
        prompts = self._prompts(requests)
        encoded = self.tokenizer([p for _, _, p in prompts])["input_ids"] if prompts else []
        return [
            Block(i, requests[i].query_id, block, ids, self._markers(ids, len(block)))
            for (i, block, _), ids in zip(prompts, encoded)
        ]

    def _markers(self, input_ids: list[int], documents: int) -> list[int]:
        """Positions of the documents' markers, in order, then of the query's marker."""
        ids = np.asarray(input_ids)
        docs, query = np.flatnonzero(ids == self.embed_id), np.flatnonzero(ids == self.rerank_id)
        if len(docs) != documents or len(query) != 1:  # special strings are removed from the texts
            raise RuntimeError(
                f"prompt has {len(docs)} document and {len(query)} query markers for {documents} documents"
            )
        return [*docs.tolist(), int(query[0])]
