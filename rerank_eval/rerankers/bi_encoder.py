"""Bi-encoders as rerankers (dense rescoring): cosine of mean-pooled, L2-normalised embeddings.

Query and documents are embedded apart (sentence-transformers convention). Each distinct document
text is embedded once per chunk of queries, however many of its queries retrieve it. Embeddings are
not kept across chunks: a document embedded beside other documents rounds differently, so reusing
an earlier chunk's embedding would make a resumed run's scores differ from an uninterrupted one's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rerank_eval.rerankers.base import RerankRequest
from rerank_eval.rerankers.common import right_padded, token_budget_batches, tokenized
from rerank_eval.rerankers.pointwise import TransformerReranker


class BiEncoder(TransformerReranker):
    family = "bi-encoder"
    score_head = "cosine of mean-pooled (attention mask), L2-normalised embeddings"

    default_max_length = 256

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cap_max_length(self.tokenizer)

    def _fresh_stats(self) -> dict[str, Any]:
        return {**super()._fresh_stats(), "embedded_documents": 0}

    def forward(self, rows: list[list[int]]) -> torch.Tensor:
        """Mean-pooled, L2-normalised embeddings of a batch of tokenized texts."""
        input_ids, mask = right_padded(rows, self.tokenizer.pad_token_id or 0)
        mask = mask.to(self.device)
        hidden = self.model(
            input_ids=input_ids.to(self.device), attention_mask=mask
        ).last_hidden_state.float()
        weights = mask.unsqueeze(-1).float()
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = tokenized(self.tokenizer, texts, self.max_length, truncation=True, max_length=self.max_length)
        out = np.empty((len(rows), 0), dtype=np.float32)
        lengths = [len(r) for r in rows]
        for batch in token_budget_batches(lengths, self.max_batch_tokens):
            self._record_batch(len(batch), lengths[batch[0]], "")
            vectors = self.forward([rows[i] for i in batch]).cpu().numpy()
            if out.shape[1] == 0:
                out = np.empty((len(rows), vectors.shape[1]), dtype=np.float32)
            out[batch] = vectors
        return out

    def score_batch(self, requests: Sequence[RerankRequest]) -> list[np.ndarray]:
        if not requests:  # (a tokenizer refuses an empty batch)
            return []
        distinct = list(dict.fromkeys(t for r in requests for t in r.texts))
        documents = dict(zip(distinct, self.embed(distinct))) if distinct else {}
        self._stats["embedded_documents"] += len(distinct)
        queries = self.embed([r.query for r in requests])
        return [
            np.stack([documents[t] for t in r.texts]) @ query if r.texts else np.empty(0, dtype=np.float32)
            for r, query in zip(requests, queries)
        ]
