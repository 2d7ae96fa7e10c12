"""Causal-LM rerankers that read a relevance judgement off two next-token logits.

`yes-no` (Qwen3-Reranker): P("yes") from a softmax over the logits of "no" and "yes".
`one-zero` (mxbai-rerank-v2): logit("1") − logit("0").
Each template is assembled from separately tokenized pieces exactly as the reference does; only
the hidden state of the last real token is projected, onto the two rows of the output embedding
that matter, so no full-vocabulary logits are computed. Pairs are right-padded, which leaves every
real position (and its rotary index) unchanged under causal attention.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import torch

from rerank_eval.errors import UserError
from rerank_eval.models.common import right_padded, tokenized
from rerank_eval.rerankers.base import DatasetContext
from rerank_eval.rerankers.pointwise import Encoded, PointwiseReranker
from rerank_eval.rerankers.settings import InstructedSettings

QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
    'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"

MXBAI_PREFIX = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n<|im_start|>user\n"
)
MXBAI_TASK = (
    "You are a search relevance expert who evaluates how well documents match search queries. "
    "For each query-document pair, carefully analyze the semantic relationship between them, then "
    "provide your binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
)
MXBAI_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"


class TwoTokenReranker(PointwiseReranker):
    """Shared loading and scoring; subclasses name the two tokens and build the token ids."""

    tokens: tuple[str, str]  # (negative, positive)

    auto_class = "AutoModelForCausalLM"
    default_max_length = 8192

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        model = self.model
        self.decoder = getattr(model, model.base_model_prefix)
        ids = [self._token_id(token) for token in self.tokens]
        head = model.get_output_embeddings()
        self.head_weight = head.weight[ids].detach().float()
        bias = getattr(head, "bias", None)
        self.head_bias = bias[ids].detach().float() if bias is not None else None

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise UserError(f"the tokenizer of {self.checkpoint.source} has no token {token!r}")
        return int(token_id)

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, as far as any pair can use them (at most max_length)."""
        return tokenized(self.tokenizer, texts, self.max_length, add_special_tokens=False)

    def template_ids(self, pieces: Sequence[str]) -> list[list[int]]:
        """Token ids of the template's fixed pieces, whole whatever max_length is (the reference
        never cuts them)."""
        return self.tokenizer(list(pieces), add_special_tokens=False)["input_ids"]

    def forward(self, rows: list[Encoded]) -> torch.Tensor:
        input_ids, mask = right_padded([r["input_ids"] for r in rows], self.tokenizer.pad_token_id or 0)
        hidden = self.decoder(
            input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)
        ).last_hidden_state
        last = hidden[torch.arange(len(rows)), mask.sum(dim=1).to(self.device) - 1].float()
        logits = last @ self.head_weight.T
        if self.head_bias is not None:
            logits = logits + self.head_bias
        return self.head(logits)

    @staticmethod
    @abstractmethod
    def head(logits: torch.Tensor) -> torch.Tensor:
        """Scores from the (negative, positive) logits of each pair."""


class YesNoReranker(TwoTokenReranker):
    family = "yes-no"
    tokens = ("no", "yes")
    score_head = 'softmax over the logits of "no" and "yes" at the last position; score = P(yes)'

    settings_class = InstructedSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_instruction = self.configured_settings.instruction or QWEN3_DEFAULT_INSTRUCTION
        self.instruction = self.default_instruction
        prefix, suffix = self.template_ids([QWEN3_PREFIX, QWEN3_SUFFIX])
        self.prefix_ids, self.suffix_ids = prefix, suffix
        if self.max_length <= len(prefix) + len(suffix):
            raise UserError(
                f"max_length {self.max_length} leaves no room for the query and document: the "
                f"{self.family} prompt's template alone is {len(prefix) + len(suffix)} tokens"
            )

    def settings(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "instruction": self.instruction}

    def begin_dataset(self, dataset: DatasetContext) -> None:
        super().begin_dataset(dataset)
        self.instruction = (
            dataset.instructions.get(self.name)
            or dataset.instructions.get(self.family)
            or self.default_instruction
        )

    def encode_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> list[Encoded]:
        body_budget = self.max_length - len(self.prefix_ids) - len(self.suffix_ids)
        bodies = self.ids(
            [f"<Instruct>: {self.instruction}\n<Query>: {q}\n<Document>: {d}" for q, d in zip(queries, docs)]
        )
        return [{"input_ids": self.prefix_ids + body[:body_budget] + self.suffix_ids} for body in bodies]

    @staticmethod
    def head(logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=-1)[:, 1]


class OneZeroReranker(TwoTokenReranker):
    family = "one-zero"
    tokens = ("0", "1")
    score_head = 'logit("1") - logit("0") at the last position'

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prefix_ids, self.sep_ids, self.task_ids, self.suffix_ids = self.template_ids(
            [MXBAI_PREFIX, "\n", MXBAI_TASK, MXBAI_SUFFIX]
        )

    def encode_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> list[Encoded]:
        query_cap = self.max_length * 3 // 4
        fixed = len(self.prefix_ids) + 2 * len(self.sep_ids) + len(self.task_ids) + len(self.suffix_ids)
        query_ids = [ids[:query_cap] for ids in self.ids([f"query: {q}" for q in queries])]
        doc_ids = self.ids([f"document: {d}" for d in docs])
        rows = []
        for query, doc in zip(query_ids, doc_ids):
            doc_cap = max(0, min(self.max_length // 4, self.max_length - fixed - len(query)))
            rows.append(
                {
                    "input_ids": self.prefix_ids + query + self.sep_ids + doc[:doc_cap] + self.sep_ids
                    + self.task_ids + self.suffix_ids
                }
            )  # fmt: skip
        return rows

    @staticmethod
    def head(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, 1] - logits[:, 0]
