"""Bi-encoders as rerankers (dense rescoring): the similarity of query and document embeddings.

A sentence-transformers checkpoint embeds as its own files say (`modules.json`: pooling, Dense
projections, normalisation, maximum length, lower-casing, query and document prompts; read by the dense first
stage's `read_sentence_transformers`, so a model scores here as it retrieves there and as
sentence-transformers would embed it); a folder without those files embeds as the family's
definition does: mean-pooled (attention mask), L2-normalised, cosine, 256 tokens.

Query and documents are embedded apart (sentence-transformers convention). Each distinct document
text is embedded once per chunk of queries, however many of its queries retrieve it. Embeddings are
not kept across chunks: a document embedded beside other documents rounds differently, so reusing
an earlier chunk's embedding would make a resumed run's scores differ from an uninterrupted one's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rerank_eval.first_stage.dense.projection import load_projections, project
from rerank_eval.first_stage.dense.recipe import encoder_class, read_sentence_transformers, vector_width
from rerank_eval.first_stage.dense.vectors import pool
from rerank_eval.models.checkpoint import Checkpoint
from rerank_eval.models.common import right_padded, token_budget_batches, tokenized
from rerank_eval.models.weights_fit import check_token_ids_fit
from rerank_eval.rerankers.base import RerankRequest
from rerank_eval.rerankers.pointwise import TransformerReranker

#: how a checkpoint without sentence-transformers files embeds (the family's definition)
FAMILY_EMBEDDING = {
    "pooling": "mean",
    "normalize": True,
    "query_prefix": "",
    "passage_prefix": "",
    "lowercase": False,
    "transformer_path": "",
}


class BiEncoder(TransformerReranker):
    family = "bi-encoder"

    default_max_length = 256
    unused_weights = ("pooler.",)  # transformers' BERT pooler: embeddings are pooled from the last layer

    def __init__(self, checkpoint: Checkpoint, *args: Any, **kwargs: Any) -> None:
        found = read_sentence_transformers(checkpoint.folder)
        self.embedding = {**FAMILY_EMBEDDING, **{k: v for k, v in found.items() if k != "max_length"}}
        transformer = checkpoint.folder / self.embedding["transformer_path"]
        self.auto_class = encoder_class(transformer)  # a T5's encoder alone (GTR, sentence-T5)
        # projections that do not chain are refused now, as the dense first stage refuses them
        layers = tuple(self.embedding.get("dense_layers", ()))
        vector_width(checkpoint.folder, transformer, layers, str(checkpoint.source))
        super().__init__(checkpoint, *args, **kwargs)
        self.projections = load_projections(checkpoint.folder, layers, checkpoint.source, self.device)
        if not self.configured_settings.max_length and found.get("max_length"):
            self.max_length = int(found["max_length"])  # its max_seq_length, as it embeds itself
        self.cap_max_length(self.tokenizer)
        similarity = "cosine" if self.embedding["normalize"] else "inner product"
        source = "the checkpoint's sentence-transformers modules" if found else "the family's default"
        projected = " and projected" if self.projections else ""
        self.score_head = (
            f"{similarity} of {self.embedding['pooling']}-pooled{projected} embeddings ({source})"
        )

    def model_folder(self) -> Path:
        """Where the transformer is: a subfolder in older sentence-transformers layouts."""
        return self.checkpoint.folder / self.embedding["transformer_path"]

    def describe(self) -> dict[str, Any]:
        """How it embeds, beside its settings: read from the checkpoint, not set (score identities
        and so journal keys include it: another pooling gives other scores)."""
        return {**super().describe(), "embedding": dict(self.embedding)}

    def _fresh_stats(self) -> dict[str, Any]:
        return {**super()._fresh_stats(), "embedded_documents": 0}

    def forward(self, rows: list[list[int]]) -> torch.Tensor:
        """The embeddings of a batch of tokenized texts, pooled (and normalised) as the model says."""
        input_ids, mask = right_padded(rows, self.tokenizer.pad_token_id or 0)
        mask = mask.to(self.device)
        hidden = self.model(input_ids=input_ids.to(self.device), attention_mask=mask).last_hidden_state
        pooled = project(pool(hidden, mask, self.embedding["pooling"]), self.projections)
        return torch.nn.functional.normalize(pooled, p=2, dim=1) if self.embedding["normalize"] else pooled

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], side: str) -> np.ndarray:
        """Embeddings of `texts` as queries or documents (`side`): its prompt put before each."""
        prefix = self.embedding["query_prefix" if side == "query" else "passage_prefix"]
        texts = [prefix + text for text in texts]
        if self.embedding["lowercase"]:
            texts = [text.lower() for text in texts]
        rows = tokenized(self.tokenizer, texts, self.max_length, truncation=True, max_length=self.max_length)
        pad = self.tokenizer.pad_token_id or 0
        check_token_ids_fit(rows, self.model, f"model {self.checkpoint.source}", f"a {side}", pad)
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
        documents = dict(zip(distinct, self.embed(distinct, "passage"))) if distinct else {}
        self._stats["embedded_documents"] += len(distinct)
        queries = self.embed([r.query for r in requests], "query")
        return [
            np.stack([documents[t] for t in r.texts]) @ query if r.texts else np.empty(0, dtype=np.float32)
            for r, query in zip(requests, queries)
        ]
