"""Cross-encoders: a sequence classifier reads the (query, document) pair; its logit is the score.

Pairs are encoded as the tokenizer's pair encoding, truncating only the document to `max_length`
(a query longer than that on its own is truncated with the document, longest first). The score
is the single logit when the head has one label, otherwise the positive class's (label 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rerank_eval.errors import UserError
from rerank_eval.models.common import bounded_text, character_groups, right_padded
from rerank_eval.rerankers.pointwise import Encoded, PointwiseReranker


class CrossEncoder(PointwiseReranker):
    family = "cross-encoder"
    score_head = "sequence-classification logit (label 1 when there are two labels)"

    auto_class = "AutoModelForSequenceClassification"
    default_max_length = 512

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cap_max_length(self.tokenizer)
        self.label = 0 if self.model.config.num_labels == 1 else 1
        self._name_the_padding()

    def _name_the_padding(self) -> None:
        """A decoder's classifier (Qwen3-Reranker or mxbai converted to *ForSequenceClassification)
        reads each pair's last token that is not padding, found by the config's pad_token_id, which
        such conversions often leave unset (transformers then refuses any batch of two): the
        tokenizer's padding token is the one the batches are padded with."""
        config = self.model.config
        if getattr(config, "pad_token_id", None) is not None:
            return
        if self.tokenizer.pad_token_id is None:
            raise UserError(
                f"cross-encoder {self.checkpoint.source} names no padding token (neither pad_token_id "
                f"in its config nor a pad_token in its tokenizer), so a batch of pairs cannot be told "
                f"apart from its padding; set pad_token_id in its config.json"
            )
        config.pad_token_id = self.tokenizer.pad_token_id

    def encode_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> list[Encoded]:
        """Pairs tokenized a group at a time (`character_groups`: huge texts a few at a time)."""
        rows: list[Encoded] = []
        for group in character_groups([len(q) + len(d) for q, d in zip(queries, docs)]):
            rows += self._encode_group(list(queries[group]), list(docs[group]))
        return rows

    def _encode_group(self, queries: list[str], docs: list[str]) -> list[Encoded]:
        try:
            return self._rows(self._pair_encoding(queries, docs, "only_second"))
        except Exception:
            return [self._encode_one(q, d) for q, d in zip(queries, docs)]

    def _encode_one(self, query: str, doc: str) -> Encoded:
        """A pair whose query alone exceeds max_length is cut on both sides, longest first."""
        try:
            return self._rows(self._pair_encoding([query], [doc], "only_second"))[0]
        except Exception:
            self._stats["pairs_truncated_longest_first"] = (
                self._stats.get("pairs_truncated_longest_first", 0) + 1
            )
            return self._rows(self._pair_encoding([query], [doc], "longest_first"))[0]

    def _pair_encoding(self, queries: list[str], docs: list[str], truncation: str):
        limit = self.max_length
        if truncation == "only_second":  # longest_first weighs both whole lengths: cut nothing there
            queries = [bounded_text(self.tokenizer, text, limit) for text in queries]
            docs = [bounded_text(self.tokenizer, text, limit) for text in docs]
        return self.tokenizer(queries, docs, truncation=truncation, max_length=limit)

    @staticmethod
    def _rows(encoded) -> list[Encoded]:
        present = [k for k in ("input_ids", "token_type_ids") if k in encoded]
        return [{k: encoded[k][i] for k in present} for i in range(len(encoded["input_ids"]))]

    def forward(self, rows: list[Encoded]) -> torch.Tensor:
        pad = self.tokenizer.pad_token_id or 0
        input_ids, mask = right_padded([r["input_ids"] for r in rows], pad)
        inputs = {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}
        if "token_type_ids" in rows[0]:
            types, _ = right_padded([r["token_type_ids"] for r in rows], 0)
            inputs["token_type_ids"] = types.to(self.device)
        return self.model(**inputs).logits[:, self.label]
