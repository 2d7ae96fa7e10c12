"""Transformer families scored in length-sorted token-budget batches.

`TransformerReranker` holds what they share: device, dtype, the batch budget, the out-of-memory
hooks and the execution statistics. `PointwiseReranker` scores each (query, document) pair on its
own: a subclass turns pairs into token ids (`encode_pairs`) and a padded batch into float32 scores
(`forward`). Which pairs share a forward pass changes a score by float rounding at most; the
pairs of one chunk are batched the same way every time (see base.py).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rerank_eval.errors import UserError, term, warn
from rerank_eval.models.checkpoint import Checkpoint, ships_code
from rerank_eval.models.common import (
    MODEL_LOAD_OPTIONS,
    attention_implementation,
    cpu_threads,
    default_batch_tokens,
    dtype_name,
    pick_device,
    pick_dtype,
    quiet_transformers,
    token_budget_batches,
)
from rerank_eval.models.weights_fit import check_config_fits_weights, check_token_ids_fit, read_config
from rerank_eval.rerankers.base import DatasetContext, Reranker, RerankRequest
from rerank_eval.rerankers.settings import PointwiseSettings
from rerank_eval.typed import declared_length

Encoded = dict[str, list[int]]  # input_ids (and token_type_ids where the model uses them)


class TransformerReranker(Reranker):
    queries_per_call = 32
    #: bumped whenever a change to a family's scoring code changes scores, so journals never mix
    scorer_version: int = 1
    #: a sentence describing the score head, recorded in the manifest
    score_head: str = ""
    #: the transformers Auto class that loads the family's checkpoints
    auto_class: str = "AutoModel"
    default_max_length: int = 512
    #: the family's settings (see rerankers/registry.py)
    settings_class: type = PointwiseSettings
    #: weights the family never uses, so a checkpoint may lack them (a bi-encoder's BERT pooler)
    unused_weights: tuple[str, ...] = ()

    def __init__(
        self,
        checkpoint: Checkpoint,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        settings: PointwiseSettings | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        self.checkpoint = checkpoint
        self.configured_settings = settings or self.settings_class()
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.attention = attention_implementation(self.device, self.dtype)
        self.max_length = int(self.configured_settings.max_length or self.default_max_length)
        self.max_batch_tokens = int(
            self.configured_settings.max_batch_tokens or default_batch_tokens(self.device)
        )
        self.configured_batch_tokens = self.max_batch_tokens
        self.trust_remote_code = trust_remote_code
        # Only a checkpoint that ships its own code runs it; its code may not support a requested
        # attention kernel and then picks its own. Every other checkpoint gets ours.
        self.runs_own_code = trust_remote_code and ships_code(checkpoint.folder)
        self._stats = self._fresh_stats()
        self._last_batch: tuple[int, int, str] = (0, 0, "")  # pairs, tokens, a query id
        self.tokenizer, self.model = self._load()
        if self.runs_own_code:  # record the kernel the model's code chose
            self.attention = str(getattr(self.model.config, "_attn_implementation", None) or self.attention)
        self.model.to(self.device).eval()

    def model_folder(self) -> Path:
        """The folder transformers loads the tokenizer and model from."""
        return self.checkpoint.folder

    def _load(self) -> tuple[Any, torch.nn.Module]:
        import transformers

        folder, remote = str(self.model_folder()), self.trust_remote_code
        model_class = getattr(transformers, self.auto_class)
        # a repository's own code builds and loads its model as it likes (and returns no loading
        # report); any other is built from the config checked against its weights
        extra: dict[str, Any] = {}
        if not self.runs_own_code:
            config = read_config(
                lambda: transformers.AutoConfig.from_pretrained(folder), self.checkpoint.source
            )
            check_config_fits_weights(
                self.model_folder(), self.checkpoint.source, config, model_class.from_config
            )
            extra = {"config": config, "attn_implementation": self.attention, "output_loading_info": True}
        try:
            with quiet_transformers():
                tokenizer = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=remote)
                loaded = model_class.from_pretrained(
                    folder, dtype=self.dtype, trust_remote_code=remote, **extra, **MODEL_LOAD_OPTIONS
                )
        except (OSError, ValueError, RuntimeError) as exc:  # (RuntimeError: weights that do not fit)
            raise UserError(
                f"cannot load {self.family} model {self.checkpoint.source}: {str(exc).splitlines()[0]}"
            ) from None
        if self.runs_own_code:
            return tokenizer, loaded
        model, loading = loaded
        self._refuse_missing_weights(loading.get("missing_keys") or ())
        return tokenizer, model

    def _refuse_missing_weights(self, missing: Any) -> None:
        """Weights the family scores with that the checkpoint lacks would be drawn at random (a
        classification head on a bare encoder, for one): the scores would mean nothing."""
        lacking = [key for key in missing if not any(part in key for part in self.unused_weights)]
        lacking.sort(key=lambda key: ("pooler" in key, key))  # a head's own weights first
        if lacking:
            shown = ", ".join(lacking[:3]) + (f" and {len(lacking) - 3} more" if len(lacking) > 3 else "")
            raise UserError(
                f"{self.checkpoint.source} lacks weights the {self.family} family scores with ({shown}); "
                f"they would be random: is it a {self.family} checkpoint?"
            )

    def cap_max_length(self, tokenizer: Any) -> None:
        """Never exceed what the tokenizer declares the model can read (e.g. 512 for MiniLM), nor
        the model's position table (a longer input would index past it; sentence-transformers caps
        the same way); a max_length set above it is said to be capped (the manifest records the
        length used)."""
        limits = [declared_length(getattr(tokenizer, "model_max_length", None)), self._positions()]
        declared = min((limit for limit in limits if limit), default=0)
        if declared and declared < self.max_length:
            if self.configured_settings.max_length:
                source = self.checkpoint.source
                warn(f"max_length {self.max_length} is more than {source} reads; {declared} is used")
            self.max_length = declared

    def _positions(self) -> int:
        """How many tokens the model's position table takes (0: no limit known). RoBERTa-style
        embeddings number positions from after the padding index (XLM-R: 514 entries, 512 read)."""
        embeddings = getattr(self.model.base_model, "embeddings", None)
        table = getattr(embeddings, "position_embeddings", None)
        if isinstance(table, torch.nn.Embedding):
            offset = getattr(embeddings, "padding_idx", None)
            return table.num_embeddings - (offset + 1 if isinstance(offset, int) else 0)
        return declared_length(getattr(self.model.config, "max_position_embeddings", None)) or 0

    def settings(self) -> dict[str, Any]:
        return {"max_length": self.max_length}

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            **self.checkpoint.identity(),
            "settings": {**self.settings(), "max_batch_tokens": self.max_batch_tokens},
            "score_head": self.score_head,
            "trust_remote_code": self.trust_remote_code,
            "device": str(self.device),
            "dtype": dtype_name(self.dtype),
            "attention": self.attention,
            "score_dtype": "float32",
        }

    def score_identity(self) -> dict[str, Any]:
        identity = self.describe()
        if "source" not in self.checkpoint.key_identity():
            identity.pop("source")
        identity["device"] = self.device.type
        identity.update(cpu_threads(self.device))
        identity["settings"] = self.settings()
        identity["scorer_version"] = f"{self.family}/{self.scorer_version}"
        return identity

    def _fresh_stats(self) -> dict[str, Any]:
        return {
            "max_batch_tokens": self.max_batch_tokens,
            "out_of_memory_retries": 0,
            "forward_passes": 0,
            "largest_batch": 0,
        }

    def begin_dataset(self, dataset: DatasetContext) -> None:
        """Counts are per dataset in the manifest; a budget shrunk by out-of-memory stays shrunk."""
        self._stats = self._fresh_stats()

    def runtime_stats(self) -> dict[str, Any]:
        return dict(self._stats)

    def batching(self) -> dict[str, Any]:
        return {"max_batch_tokens": self.configured_batch_tokens, "order": "length-sorted token budget"}

    def restore_batch_budget(self) -> None:
        self.max_batch_tokens = self.configured_batch_tokens

    def _record_batch(self, size: int, tokens: int, query_id: str) -> None:
        """Called before each forward pass: a stop request abandons the chunk here."""
        self.before_forward()
        self._last_batch = (size, tokens, query_id)
        self._stats["forward_passes"] += 1
        self._stats["largest_batch"] = max(self._stats["largest_batch"], size)

    def shrink_batch_budget(self) -> bool:
        if self._last_batch[0] <= 1:
            return False
        self.max_batch_tokens = max(1, self.max_batch_tokens // 2)
        self._stats["out_of_memory_retries"] += 1
        self._stats["max_batch_tokens"] = self.max_batch_tokens
        return True

    def out_of_memory_message(self, requests: Sequence[RerankRequest]) -> str:
        _, tokens, query_id = self._last_batch
        return (
            f"query {query_id}: one pair of {tokens:,} tokens does not fit in GPU memory even alone "
            f"(max_length {self.max_length}, dtype {dtype_name(self.dtype)}); lower {term('settings')} "
            f"max_length=..."
        )


class PointwiseReranker(TransformerReranker):
    @abstractmethod
    def encode_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> list[Encoded]:
        """Token ids of each (query, document) pair, exactly as the family's reference builds them."""

    @abstractmethod
    def forward(self, rows: list[Encoded]) -> torch.Tensor:
        """Float32 scores of a batch of encoded pairs."""

    @torch.inference_mode()
    def score_batch(self, requests: Sequence[RerankRequest]) -> list[np.ndarray]:
        owners = [(r.query_id, r.query) for r in requests for _ in r.texts]
        encoded = self.encode_pairs([q for _, q in owners], [t for r in requests for t in r.texts])
        ids = [e["input_ids"] for e in encoded]
        pad = self.tokenizer.pad_token_id or 0
        check_token_ids_fit(ids, self.model, f"model {self.checkpoint.source}", "a pair", pad)
        scores = np.empty(len(encoded), dtype=np.float32)
        lengths = [len(e["input_ids"]) for e in encoded]
        for batch in token_budget_batches(lengths, self.max_batch_tokens):
            self._record_batch(len(batch), lengths[batch[0]], owners[batch[0]][0])
            scores[batch] = self.forward([encoded[i] for i in batch]).float().cpu().numpy()
        out, offset = [], 0
        for request in requests:
            out.append(scores[offset : offset + len(request.texts)])
            offset += len(request.texts)
        return out
