"""The listwise last-token reranker ("last but not late" interaction), e.g. jina-reranker-v3.

A query and a block of candidates go through one causal Qwen3 decoder in a single prompt; the
last-layer hidden state at each `<|embed_token|>` is a document's vector, the one at the
`<|rerank_token|>` the query's; a shared MLP projects both and the score is their cosine. Every
step follows the published procedure (see ../shared/specs/listwise-last-token.md in the project's
workspace); only the execution differs: blocks of several queries share forward passes (right
padding, which leaves every real position unchanged under causal attention, or with
FlashAttention the blocks packed in one row with their boundaries given to its varlen kernel), no
LM head runs and only the last hidden state is kept, and only at the positions read (see
qwen3_kernels), each RMSNorm runs as one fused kernel, and on CUDA the rotary embedding and SiLU run
as compiled kernels.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from rerank_eval.compiling import compile_by_default
from rerank_eval.errors import UserError, term
from rerank_eval.models.checkpoint import Checkpoint
from rerank_eval.models.common import (
    MODEL_LOAD_OPTIONS,
    cpu_threads,
    default_batch_tokens,
    dtype_name,
    pick_device,
    pick_dtype,
    quiet_transformers,
)
from rerank_eval.models.weights_fit import check_config_fits_weights, read_config
from rerank_eval.rerankers.base import SETTING_TERMS, DatasetContext, Reranker, RerankRequest
from rerank_eval.rerankers.listwise.execution import Block, BlockExecution
from rerank_eval.rerankers.listwise.model import (
    BATCHING_SETTINGS,
    VARLEN_ATTENTIONS,
    Projector,
    cast_as_loading_does,
    default_pad_multiple,
    listwise_attention,
    load_projector_weights,
)
from rerank_eval.rerankers.listwise.procedure import (
    EMBED_TOKEN,
    RERANK_TOKEN,
    SCORER_VERSION,
    merge_blocks,
)
from rerank_eval.rerankers.listwise.prompting import BlockPrompts
from rerank_eval.rerankers.listwise.qwen3_kernels import (
    REPEATED_KV_SDPA,
    compile_failure,
    use_compiled_elementwise,
    use_fused_rms_norm,
    use_trimmed_last_layer,
)
from rerank_eval.rerankers.settings import ListwiseSettings
from rerank_eval.typed import declared_length


class ListwiseLastToken(BlockPrompts, BlockExecution, Reranker):
    family = "listwise-last-token"
    queries_per_call = 16

    def __init__(
        self,
        checkpoint: Checkpoint,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        settings: ListwiseSettings | None = None,
    ) -> None:
        from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

        self.checkpoint = checkpoint
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        config = checkpoint.config()
        if config.get("model_type") != "qwen3":
            raise UserError(
                f"checkpoint {checkpoint.source} has model_type {config.get('model_type')!r}; "
                f"the listwise last-token family needs a qwen3 backbone"
            )
        config = read_config(lambda: Qwen3Config.from_pretrained(str(checkpoint.folder)), checkpoint.source)
        check_config_fits_weights(checkpoint.folder, checkpoint.source, config, Qwen3Model)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(checkpoint.folder))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load the tokenizer of {checkpoint.source}: {exc}") from None
        projector_weights = load_projector_weights(checkpoint)
        attention = listwise_attention(self.device, self.dtype)
        with quiet_transformers():  # projector and lm_head keys are expected to go unused
            backbone = Qwen3Model.from_pretrained(
                str(checkpoint.folder),
                config=config,
                dtype=self.dtype,
                attn_implementation=attention,
                **MODEL_LOAD_OPTIONS,
            )
        self._assemble(tokenizer, backbone, projector_weights, settings or ListwiseSettings())

    @classmethod
    def from_parts(
        cls,
        checkpoint: Checkpoint,
        tokenizer: Any,
        backbone: nn.Module,
        projector_weights: dict[str, torch.Tensor],
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        settings: ListwiseSettings | None = None,
    ) -> ListwiseLastToken:
        """A reranker from components already in memory (benchmarks on randomly initialised models)."""
        reranker = cls.__new__(cls)
        reranker.checkpoint = checkpoint
        reranker.device = pick_device(device)
        reranker.dtype = pick_dtype(dtype, reranker.device)
        reranker._assemble(
            tokenizer,
            cast_as_loading_does(backbone, reranker.dtype),
            projector_weights,
            settings or ListwiseSettings(),
        )
        return reranker

    def _assemble(
        self,
        tokenizer: Any,
        backbone: nn.Module,
        projector_weights: dict[str, torch.Tensor],
        settings: ListwiseSettings,
    ) -> None:
        self.tokenizer = tokenizer
        self.embed_id = self._special_token_id(EMBED_TOKEN)
        self.rerank_id = self._special_token_id(RERANK_TOKEN)
        self.attention = backbone.config._attn_implementation
        self.backbone = backbone.to(self.device).eval()
        self.projector = Projector(projector_weights).to(self.device).eval()
        context_length, self.context_source = self._context_length(settings.context_length)
        self.settings = replace(  # every default resolved, so the manifest records what ran
            settings,
            context_length=context_length,
            max_batch_tokens=settings.max_batch_tokens or default_batch_tokens(self.device),
            fused_rms_norm=settings.fused_rms_norm is not False,
            trim_last_layer=settings.trim_last_layer is not False,
            compile_elementwise=self._resolved_compile(settings.compile_elementwise),
            pad_multiple=settings.pad_multiple or default_pad_multiple(self.device),
            pack_blocks=self._resolved_packing(settings.pack_blocks),
        )
        if self.settings.pad_multiple > context_length:  # (a row is never longer than the context)
            raise UserError(
                f"setting pad_multiple of family listwise-last-token must be at most the context length "
                f"({context_length:,}), got {self.settings.pad_multiple:,}"
            )
        self.configured_batch_tokens = self.settings.max_batch_tokens
        self.use_published_modules(False)
        self._stats = self._fresh_stats()
        self._block_sizes: dict[str, list[int]] = {}  # query id -> its blocks' sizes, last chunk
        self._documents: dict[str, tuple[str, int]] = {}  # text -> (truncated text, token count)
        self._last_batch_blocks = 0
        self._last_block_query = ""
        self._last_block_tokens = 0

    def _resolved_compile(self, requested: bool | None) -> bool:
        """compile_elementwise as asked, or its default; checked by compiling both kernels once.
        Asked for and impossible: a one-line error. By default and impossible: eager, said once
        on stderr, and recorded as off in the manifest."""
        wanted = compile_by_default(self.device) if requested is None else requested
        failure = compile_failure(self.backbone, self.device, self.dtype) if wanted else None
        if failure and requested:
            raise UserError(
                f"compile_elementwise: torch.compile cannot build kernels on {self.device} ({failure}); "
                f"run with {term('settings')} compile_elementwise=false",
                SETTING_TERMS,
            )
        if failure:
            print(
                f"torch.compile cannot build kernels on {self.device} ({failure}); the rotary "
                f"embedding and SiLU run eager (compile_elementwise=false)",
                file=sys.stderr,
            )
        return wanted and not failure

    def _resolved_packing(self, requested: bool | None) -> bool:
        """pack_blocks as asked; by default where the attention kernel takes sequence boundaries
        (FlashAttention's varlen kernels), so that several blocks share a row without padding."""
        if requested is None:
            return self.attention in VARLEN_ATTENTIONS
        if requested and self.attention == REPEATED_KV_SDPA:
            raise UserError(
                "pack_blocks needs FlashAttention or SDPA with a mask; float32 on CUDA runs an "
                "attention without masks: use bfloat16, or leave pack_blocks unset"
            )
        return requested

    def use_published_modules(self, published: bool) -> None:
        """transformers' own modules (what the published code runs), or those the settings choose."""
        fused = self.settings.fused_rms_norm and not published
        switched = use_fused_rms_norm(self.backbone, fused)
        self.fused_norms = switched if fused else 0
        use_trimmed_last_layer(self.backbone, self.settings.trim_last_layer and not published)
        use_compiled_elementwise(self.backbone, self.settings.compile_elementwise and not published)

    def _special_token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        ids = self.tokenizer(token, add_special_tokens=False)["input_ids"]
        if token_id is None or token_id == self.tokenizer.unk_token_id or ids != [token_id]:
            raise UserError(f"the tokenizer of {self.checkpoint.source} lacks the special token {token}")
        return int(token_id)

    def _context_length(self, explicit: int | None) -> tuple[int, str]:
        if explicit:
            return int(explicit), "setting"
        from_tokenizer = declared_length(self.tokenizer.model_max_length)
        if from_tokenizer:
            return from_tokenizer, "tokenizer.model_max_length"
        positions = self.backbone.config.max_position_embeddings
        if declared_length(positions) is None:
            raise UserError(
                f"checkpoint {self.checkpoint.source}: neither its tokenizer nor its config declares a "
                f"context length (max_position_embeddings {positions!r}); set context_length"[:300]
            )
        return positions, "config.max_position_embeddings"

    def score_identity(self) -> dict[str, Any]:
        """describe() without what cannot change a score beyond float rounding: the folder's path
        (its content hash identifies it), the device's index, and the batching settings (≤ 1e-6 in
        the float32 tests; the journal's key holds them apart, through `batching`); on a CPU, its
        thread count added (`cpu_threads`)."""
        identity = self.describe()
        if "source" not in self.checkpoint.key_identity():
            identity.pop("source")
        identity["device"] = self.device.type
        identity.update(cpu_threads(self.device))
        identity["settings"] = {k: v for k, v in identity["settings"].items() if k not in BATCHING_SETTINGS}
        return identity

    def _fresh_stats(self) -> dict[str, int]:
        return {
            "max_batch_tokens": self.settings.max_batch_tokens,
            "out_of_memory_retries": 0,
            "forward_passes": 0,
            "largest_batch_blocks": 0,
            "truncated_documents": 0,
        }

    def begin_dataset(self, dataset: DatasetContext) -> None:
        """Counts are per dataset in the manifest; a budget shrunk by out-of-memory stays shrunk."""
        self._stats = self._fresh_stats()
        self.forget_documents()

    def forget_documents(self) -> None:
        """Drop the remembered truncations (a new dataset, or a benchmark's cold start)."""
        self._documents.clear()

    def runtime_stats(self) -> dict[str, Any]:
        return dict(self._stats)

    def shrink_batch_budget(self) -> bool:
        """Halve the token budget unless the failing batch already held a single block."""
        if self._last_batch_blocks <= 1:
            return False
        self.settings = ListwiseSettings(
            **{**asdict(self.settings), "max_batch_tokens": max(1, self.settings.max_batch_tokens // 2)}
        )
        self._stats["out_of_memory_retries"] += 1
        self._stats["max_batch_tokens"] = self.settings.max_batch_tokens
        return True

    def restore_batch_budget(self) -> None:
        if self.settings.max_batch_tokens != self.configured_batch_tokens:
            self.settings = ListwiseSettings(
                **{**asdict(self.settings), "max_batch_tokens": self.configured_batch_tokens}
            )

    def batching(self) -> dict[str, Any]:
        """The batching settings as configured, and how blocks are grouped."""
        settings = {**asdict(self.settings), "max_batch_tokens": self.configured_batch_tokens}
        grouping = "blocks packed in order" if self.settings.pack_blocks else "length-sorted token budget"
        return {**{name: settings[name] for name in BATCHING_SETTINGS}, "order": grouping}

    def notes(self, request: RerankRequest) -> dict[str, Any]:
        """How the query's candidates were split into blocks (sizes in presentation order):
        scores can change with the split, so it is reported per query."""
        sizes = self._block_sizes.get(request.query_id)
        return {"blocks": sizes} if sizes is not None else {}

    def out_of_memory_message(self, requests: Sequence[RerankRequest]) -> str:
        s = self.settings
        return (
            f"query {self._last_block_query}: one block of {self._last_block_tokens:,} tokens does not fit "
            f"in GPU memory even alone (context_length {s.context_length}, max_doc_length "
            f"{s.max_doc_length}, dtype {dtype_name(self.dtype)}); lower {term('settings')} "
            f"context_length=... so blocks get shorter, lower {term('settings')} max_doc_length=..., or "
            f"use a GPU with more memory"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "scorer_version": SCORER_VERSION,
            **self.checkpoint.identity(),
            "settings": asdict(self.settings),
            "context_length_from": self.context_source,
            "device": str(self.device),
            "dtype": dtype_name(self.dtype),
            "attention": self.attention,
            "fused_rms_norms": self.fused_norms,
            "projector_dtype": "float32",
            "score_dtype": "float32",
        }

    def prepare(self, requests: Sequence[RerankRequest]) -> tuple[list[RerankRequest], list[Block]]:
        return list(requests), self._blocks(requests)

    def score_batch(self, requests: Sequence[RerankRequest]) -> list[np.ndarray]:
        return self.score_prepared(self.prepare(requests))

    def score_prepared(self, prepared: tuple[list[RerankRequest], list[Block]]) -> list[np.ndarray]:
        requests, blocks = prepared
        vectors = {id(block): encoded for block, encoded in self._block_vectors(blocks)}
        per_request: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in requests]
        self._block_sizes = {request.query_id: [] for request in requests}
        for block in blocks:  # blocks are in request and input order
            per_request[block.request].append(vectors[id(block)])
            self._block_sizes[block.query_id].append(len(block.docs))
        scores = []
        for request, parts in zip(requests, per_request):
            if not parts:
                scores.append(np.zeros(len(request.texts), dtype=np.float32))
                continue
            merged = merge_blocks([d for d, _ in parts], [q for _, q in parts])
            scores.append(merged.astype(np.float32))
        return scores
