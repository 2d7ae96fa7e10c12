"""The listwise last-token reranker ("last but not late" interaction), e.g. jina-reranker-v3.

A query and a block of candidates go through one causal Qwen3 decoder in a single prompt; the
last-layer hidden state at each `<|embed_token|>` is a document's vector, the one at the
`<|rerank_token|>` the query's; a shared MLP projects both and the score is their cosine. Every
step follows the published procedure (see ../shared/specs/listwise-last-token.md in the project's
workspace); only the execution differs: blocks of several queries share forward passes (right
padding, which leaves every real position unchanged under causal attention, or with
FlashAttention the blocks packed in one row with their boundaries given to its varlen kernel), no
LM head runs and only the last hidden state is kept, and only at the positions read (see
qwen3_fast), each RMSNorm runs as one fused kernel, and on CUDA the rotary embedding and SiLU run
as compiled kernels.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from rerank_eval.config.schema import DatasetSpec
from rerank_eval.errors import UserError
from rerank_eval.rerankers.base import Reranker, RerankRequest
from rerank_eval.rerankers.checkpoint import Checkpoint
from rerank_eval.rerankers.common import (
    attention_implementation,
    bounded_text,
    default_batch_tokens,
    dtype_name,
    packed_batches,
    pick_device,
    pick_dtype,
    quiet_transformers,
    right_padded,
    rounded_up,
    to_device,
    token_budget_batches,
)
from rerank_eval.rerankers.qwen3_fast import (
    REPEATED_KV_SDPA,
    compile_failure,
    last_layer_at,
    register_repeated_kv_attention,
    use_compiled_elementwise,
    use_fused_rms_norm,
    use_trimmed_last_layer,
)

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
# transformers' placeholder for "no limit"; anything above this is not a real context length.
_UNSET_MAX_LENGTH = 10**9
# Distinct documents whose truncation is remembered; beyond it the memory is cleared (API users
# scoring an endless stream of documents never see it grow without bound).
DOCUMENT_CACHE_LIMIT = 2_000_000
# Attention implementations that take packed sequences' boundaries (cu_seq_lens_*, max_length_*).
VARLEN_ATTENTIONS = frozenset({"flash_attention_2", "flash_attention_3"})
# Settings that only regroup the same arithmetic (scores move by float rounding at most): they are
# recorded in the manifest but not part of the score cache's key.
BATCHING_SETTINGS = ("max_batch_tokens", "pad_multiple", "pack_blocks")
# Bumped whenever a change here can change a score, so cached scores are never reused across it.
SCORER_VERSION = "listwise-last-token/2"  # 2: special strings removed after truncation


@dataclass(frozen=True)
class ListwiseSettings:
    """The procedure's parameters; all of them are recorded in the run manifest."""

    max_query_length: int = 512
    max_doc_length: int = 2048
    block_size: int = 125
    context_length: int | None = None  # None: the tokenizer's model_max_length (see load)
    instruction: str | None = None  # never used by the published procedure
    max_batch_tokens: int | None = None  # padded tokens per forward pass; None: per device
    fused_rms_norm: bool = True  # see qwen3_fast.use_fused_rms_norm
    trim_last_layer: bool = True  # the last layer only at the marker positions (qwen3_fast)
    compile_elementwise: bool | None = None  # torch.compile'd rotary and SiLU; None: on CUDA (qwen3_fast)
    pad_multiple: int | None = None  # padded length rounded up to a multiple; None: per device
    pack_blocks: bool | None = None  # blocks concatenated in one row; None: with FlashAttention


def default_pad_multiple(device: torch.device) -> int:
    """On CUDA, forward-pass lengths rounded up to a multiple of 64 tokens: cuDNN attention (what
    SDPA picks on Hopper) plans every new sequence length once, about 33 ms on an H200, which a
    BEIR run whose prompts all differ in length would otherwise pay on most forward passes. The
    padding costs at most 63 positions per row; a CPU has no such plans and pads nothing."""
    return 64 if device.type == "cuda" else 1


def compile_by_default(device: torch.device) -> bool:
    """compile_elementwise's default: on CUDA where Triton supports the GPU (measured on an H200:
    `medium` from 1.5–1.85× to 2.1× the reference-style path), off on CPUs, where it gains nothing."""
    from torch.utils._triton import has_triton

    return device.type == "cuda" and has_triton()


def listwise_attention(device: torch.device, dtype: torch.dtype) -> str:
    """The attention kernel for the listwise backbone on this device and dtype."""
    if device.type == "cuda" and dtype == torch.float32:
        return register_repeated_kv_attention()
    return attention_implementation(device, dtype)


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
) -> list[range]:
    """Split documents (in input order) into blocks by the published capacity rule."""
    blocks: list[range] = []
    start = 0
    capacity = context_length - 2 * query_length
    for index, length in enumerate(doc_lengths):
        capacity -= length
        if index + 1 - start >= block_size or capacity <= max_doc_length:
            blocks.append(range(start, index + 1))
            start = index + 1
            capacity = context_length - 2 * query_length
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


class Projector(nn.Module):
    """Linear → ReLU → Linear, shapes read from the checkpoint's weights."""

    def __init__(self, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        first, second = weights["projector.0.weight"], weights["projector.2.weight"]
        self.layers = nn.Sequential(
            nn.Linear(first.shape[1], first.shape[0], bias="projector.0.bias" in weights),
            nn.ReLU(),
            nn.Linear(second.shape[1], second.shape[0], bias="projector.2.bias" in weights),
        )
        self.layers.load_state_dict({k.removeprefix("projector."): v.float() for k, v in weights.items()})

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.layers(hidden)


def _load_projector_weights(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    files = sorted(checkpoint.folder.glob("*.safetensors"))
    weights: dict[str, torch.Tensor] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                if key.startswith("projector."):
                    weights[key] = handle.get_tensor(key)
    missing = [k for k in ("projector.0.weight", "projector.2.weight") if k not in weights]
    if not files or missing:
        raise UserError(
            f"checkpoint {checkpoint.source} lacks projector weights "
            f"({', '.join(missing) or 'no .safetensors file'}); a listwise last-token checkpoint "
            f"stores them beside the backbone"
        )
    return weights


@dataclass
class _Block:
    request: int
    query_id: str
    docs: range
    input_ids: list[int]
    markers: list[int]  # where the last hidden state is read: each document's marker, the query's


@dataclass
class _ForwardInputs:
    """One forward pass's tensors on the device: token ids, the positions read (rows, kept), and
    for packed blocks each read position's block start, the token positions and block boundaries."""

    input_ids: torch.Tensor
    keep: torch.Tensor
    starts: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    boundaries: dict[str, Any] = field(default_factory=dict)


class ListwiseLastToken(Reranker):
    family = "listwise-last-token"
    queries_per_call = 16

    def __init__(
        self,
        checkpoint: Checkpoint,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        **settings: Any,
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
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(checkpoint.folder))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load the tokenizer of {checkpoint.source}: {exc}") from None
        projector_weights = _load_projector_weights(checkpoint)
        attention = listwise_attention(self.device, self.dtype)
        with quiet_transformers():  # projector and lm_head keys are expected to go unused
            backbone = Qwen3Model.from_pretrained(
                str(checkpoint.folder),
                config=Qwen3Config.from_pretrained(str(checkpoint.folder)),
                dtype=self.dtype,
                attn_implementation=attention,
            )
        self._assemble(tokenizer, backbone, projector_weights, settings)

    @classmethod
    def from_parts(
        cls,
        checkpoint: Checkpoint,
        tokenizer: Any,
        backbone: nn.Module,
        projector_weights: dict[str, torch.Tensor],
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        **settings: Any,
    ) -> ListwiseLastToken:
        """A reranker from components already in memory (benchmarks on randomly initialised models)."""
        reranker = cls.__new__(cls)
        reranker.checkpoint = checkpoint
        reranker.device = pick_device(device)
        reranker.dtype = pick_dtype(dtype, reranker.device)
        reranker._assemble(tokenizer, backbone.to(reranker.dtype), projector_weights, settings)
        return reranker

    def _assemble(
        self, tokenizer: Any, backbone: nn.Module, projector_weights: dict[str, torch.Tensor], settings: dict
    ) -> None:
        self.tokenizer = tokenizer
        self.embed_id = self._special_token_id(EMBED_TOKEN)
        self.rerank_id = self._special_token_id(RERANK_TOKEN)
        self.attention = backbone.config._attn_implementation
        self.backbone = backbone.to(self.device).eval()
        self.projector = Projector(projector_weights).to(self.device).eval()
        context_length, self.context_source = self._context_length(settings.get("context_length"))
        self.settings = ListwiseSettings(
            **{
                **settings,
                "context_length": context_length,
                "max_batch_tokens": settings.get("max_batch_tokens") or default_batch_tokens(self.device),
                "fused_rms_norm": settings.get("fused_rms_norm") is not False,
                "trim_last_layer": settings.get("trim_last_layer") is not False,
                "compile_elementwise": self._resolved_compile(settings.get("compile_elementwise")),
                "pad_multiple": settings.get("pad_multiple") or default_pad_multiple(self.device),
                "pack_blocks": self._resolved_packing(settings.get("pack_blocks")),
            }
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
                f"run with --set compile_elementwise=false"
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
        from_tokenizer = int(self.tokenizer.model_max_length or 0)
        if 0 < from_tokenizer < _UNSET_MAX_LENGTH:
            return from_tokenizer, "tokenizer.model_max_length"
        return int(self.backbone.config.max_position_embeddings), "config.max_position_embeddings"

    def score_identity(self) -> dict[str, Any]:
        """describe() without what cannot change a score beyond float rounding: the folder's path
        (its content hash identifies it), the device's index, and the batching settings (≤ 1e-6 in
        the float32 tests; the journal's key holds them apart, through `batching`)."""
        identity = self.describe()
        if identity["content_sha256"]:
            identity.pop("source")
        identity["device"] = self.device.type
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

    def begin_dataset(self, spec: DatasetSpec) -> None:
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
            f"{s.max_doc_length}, dtype {dtype_name(self.dtype)}); lower "
            f"--set context_length=... so blocks get shorter, lower --set max_doc_length=..., or use "
            f"a GPU with more memory"
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

    # -- the procedure ---------------------------------------------------------------------------

    def _truncate(self, texts: list[str], limit: int) -> tuple[list[str], list[int]]:
        """Cut texts of `limit` tokens or more to `limit` tokens (text replaced by their decoding).

        Returns the texts and their token counts (a count equal to `limit` means cut).
        """
        bounded = [bounded_text(self.tokenizer, text, limit) for text in texts]
        encoded = self.tokenizer(bounded, add_special_tokens=False)["input_ids"]
        cut_texts, lengths = [], []
        for text, ids in zip(bounded, encoded):
            if len(ids) >= limit:
                ids = ids[:limit]
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
                lengths, query_lengths[index], s.context_length, s.max_doc_length, s.block_size
            ):
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

    def _blocks(self, requests: Sequence[RerankRequest]) -> list[_Block]:
        prompts = self._prompts(requests)
        encoded = self.tokenizer([p for _, _, p in prompts])["input_ids"] if prompts else []
        return [
            _Block(i, requests[i].query_id, block, ids, self._markers(ids, len(block)))
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

    def _batches(self, blocks: list[_Block]) -> list[list[_Block]]:
        """Batches within the token budget: blocks in order whose lengths add up to it when packed,
        else length-sorted ones whose padded size (rows × longest, rounded up) stays within it."""
        budget = self.settings.max_batch_tokens
        if self.settings.pack_blocks:
            groups = packed_batches([len(b.input_ids) for b in blocks], budget, self.settings.pad_multiple)
        else:
            lengths = [rounded_up(len(b.input_ids), self.settings.pad_multiple) for b in blocks]
            groups = token_budget_batches(lengths, budget)
        return [[blocks[i] for i in group] for group in groups]

    @torch.inference_mode()
    def _launch(self, batch: list[_Block]) -> torch.Tensor:
        """Queue the batch's forward pass and projection; returns the projected vectors at each
        block's markers, (blocks, markers, width) on the device, still being computed on a GPU."""
        # each block's marker positions, padded by repeating its last one (read, then ignored)
        width = max(len(b.markers) for b in batch)
        markers = [b.markers + b.markers[-1:] * (width - len(b.markers)) for b in batch]
        self.before_forward()
        inputs = self._packed(batch, markers) if self.settings.pack_blocks else self._padded(batch, markers)
        self._last_batch_blocks = len(batch)
        self._last_block_tokens = max(len(b.input_ids) for b in batch)
        self._last_block_query = batch[0].query_id
        self._stats["forward_passes"] += 1
        self._stats["largest_batch_blocks"] = max(self._stats["largest_batch_blocks"], len(batch))
        # use_cache=False: no key/value cache is built (it would hold every layer's keys and values).
        if self.settings.trim_last_layer:
            with last_layer_at(self.backbone, inputs.keep, inputs.starts):
                hidden = self._forward(inputs)
        else:
            rows = torch.arange(inputs.keep.shape[0], device=self.device)[:, None]
            hidden = self._forward(inputs)[rows, inputs.keep]
        return self.projector(hidden.float()).view(len(batch), width, -1)

    def _padded(self, batch: list[_Block], markers: list[list[int]]) -> _ForwardInputs:
        """One row per block, right-padded. No attention mask: under causal attention no real token
        sees the padding placed after it, so the plain causal kernel (FlashAttention/SDPA
        is_causal) gives every real position the value it has alone."""
        input_ids, _ = right_padded(
            [b.input_ids for b in batch], pad_id=0, multiple=self.settings.pad_multiple
        )
        keep = torch.tensor(markers)
        rows, width = input_ids.shape
        return _ForwardInputs(
            to_device(input_ids, self.device),
            to_device(keep, self.device),
            boundaries=self._boundaries([width] * rows),
        )

    def _packed(self, batch: list[_Block], markers: list[list[int]]) -> _ForwardInputs:
        """Every block in one row, each with its own positions from 0. A FlashAttention kernel is
        given the blocks' boundaries (cumulative lengths, computed here on the host, so nothing
        waits for the GPU); any other attention gets transformers' block-diagonal causal mask,
        which it builds from the positions. The trimmed last layer is given each marker's block
        start, so its markers never see an earlier block."""
        lengths = [len(b.input_ids) for b in batch]
        offsets = list(itertools.accumulate(lengths, initial=0))
        keep = torch.tensor([[offset + m for offset, row in zip(offsets, markers) for m in row]])
        starts = torch.tensor([[offset for offset, row in zip(offsets, markers) for _ in row]])
        # the row rounded up to pad_multiple by one more sequence of padding (read by nobody), so
        # that kernels planned per length (the trimmed layer's masked attention) meet fewer lengths
        padding = rounded_up(offsets[-1], self.settings.pad_multiple) - offsets[-1]
        if padding:
            lengths = [*lengths, padding]
        ids = torch.tensor([[token for b in batch for token in b.input_ids] + [0] * padding])
        positions = torch.cat([torch.arange(n) for n in lengths])[None]
        return _ForwardInputs(
            *(to_device(t, self.device) for t in (ids, keep, starts, positions)),
            boundaries=self._boundaries(lengths),
        )

    def _boundaries(self, lengths: list[int]) -> dict[str, Any]:
        """FlashAttention's varlen arguments for sequences of these lengths laid end to end, made
        on the host so that nothing waits for the GPU (given none, transformers reads positions on
        the host to look for packed sequences); none for attention without varlen kernels."""
        if self.attention not in VARLEN_ATTENTIONS:
            return {}
        cumulative = torch.tensor(list(itertools.accumulate(lengths, initial=0)), dtype=torch.int32)
        cumulative = to_device(cumulative, self.device)
        longest = max(lengths)
        return {"cu_seq_lens_q": cumulative, "cu_seq_lens_k": cumulative,
                "max_length_q": longest, "max_length_k": longest}  # fmt: skip

    def _forward(self, inputs: _ForwardInputs) -> torch.Tensor:
        """The backbone's last hidden state, without waiting for the GPU.

        Given no mask, transformers looks for sequences packed in a row by reading a GPU tensor on
        the host, which waits for every queued forward pass. So masks are passed ready-made where
        every layer's is "none": with FlashAttention (the sequence boundaries and any sliding
        window go to its kernels instead), and for right-padded rows without sliding-window layers
        (causal). Transformers builds them only for sliding windows under SDPA, and for blocks
        packed without FlashAttention, whose block-diagonal mask comes from the positions.
        """
        layer_types = set(self.backbone.config.layer_types)
        if self.attention in VARLEN_ATTENTIONS:
            masks = dict.fromkeys(layer_types)
        elif inputs.positions is not None or "sliding_attention" in layer_types:
            masks = None
        else:
            masks = {"full_attention": None}
        return self.backbone(
            input_ids=inputs.input_ids,
            position_ids=inputs.positions,
            attention_mask=masks,
            use_cache=False,
            **inputs.boundaries,
        ).last_hidden_state

    @staticmethod
    def _collect(batch: list[_Block], projected: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
        """(document vectors, query vector) of each block, copied to the host (waits for the GPU)."""
        vectors = projected.cpu().numpy()
        return [(vectors[row, : len(b.docs)], vectors[row, len(b.docs)]) for row, b in enumerate(batch)]

    def _block_vectors(self, blocks: list[_Block]) -> Iterator[tuple[_Block, tuple[np.ndarray, np.ndarray]]]:
        """Every block with its vectors, batch by batch. Each batch is queued before the previous
        one's vectors are copied back (which waits for the GPU), so that on a GPU the next forward
        pass is already queued when one ends instead of waiting for the host."""
        previous: tuple[list[_Block], torch.Tensor] | None = None
        for batch in self._batches(blocks):
            current = (batch, self._launch(batch))
            if previous:
                yield from zip(previous[0], self._collect(*previous))
            previous = current
        if previous:
            yield from zip(previous[0], self._collect(*previous))

    def prepare(self, requests: Sequence[RerankRequest]) -> tuple[list[RerankRequest], list[_Block]]:
        return list(requests), self._blocks(requests)

    def score_batch(self, requests: Sequence[RerankRequest]) -> list[np.ndarray]:
        return self.score_prepared(self.prepare(requests))

    def score_prepared(self, prepared: tuple[list[RerankRequest], list[_Block]]) -> list[np.ndarray]:
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
