"""A bi-encoder that embeds queries and passages: pooling, normalisation, prefixes and adapters as
its recipe says, and two ways of running it.

`embed` is the fast path: each distinct text tokenized once, batches sorted by length under a
token budget (little padding), bf16 on CUDA, and out-of-memory back-off. `embed_straightforward`
is sentence-transformers' way (fixed-size batches in input order); the bench times both and the
tests hold them equal.

On CUDA where Triton works (and unless the setting `fused_kernels` says otherwise),
jina-embeddings-v3's backbone runs with fused kernels (`jina_kernels`): the rotary embedding and
each residual add with its LayerNorm compiled, the padding mask given in 4-d form.

Adapters (jina-embeddings-v3's `retrieval_query` / `retrieval_passage` LoRA) are loaded with PEFT,
the maintained library for them, and by default merged into a copy of the weights once per side,
so encoding runs the plain model.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rerank_eval.errors import UserError, describe
from rerank_eval.first_stage.dense import jina_kernels
from rerank_eval.first_stage.dense.checkpoint_files import inside_checkpoint
from rerank_eval.first_stage.dense.kernel_choice import fused_kernels_chosen, packing_chosen
from rerank_eval.first_stage.dense.projection import load_projections, project
from rerank_eval.first_stage.dense.recipe import EncoderRecipe, encoder_class
from rerank_eval.first_stage.dense.vectors import QueuedVectors, pool, pool_packed
from rerank_eval.models.checkpoint import Checkpoint
from rerank_eval.models.common import (
    MODEL_LOAD_OPTIONS,
    OUT_OF_MEMORY,
    cpu_threads,
    default_batch_tokens,
    device_name,
    dtype_name,
    packed_batches,
    pick_device,
    pick_dtype,
    quiet_transformers,
    release_cached_memory,
    right_padded,
    to_device,
    token_budget_batches,
    tokenized,
)
from rerank_eval.models.weights_fit import (
    check_config_fits_weights,
    check_token_ids_fit,
    check_tokenizer_fits_config,
    read_config,
)

SIDES = ("query", "passage")
#: the weight files a PEFT adapter folder may hold (safetensors first: the ones downloaded)
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
#: texts tokenized at once by `embed` (the next chunk's tokenization overlaps this one's encoding);
#: on a GPU chunks grow from the first size to the largest, so the device starts after a short
#: wait; on a CPU, where tokenizing competes with the forward passes for the same cores, every
#: chunk has the largest size (growing ones measured 5-8% slower on 2 cores)
FIRST_EMBED_CHUNK = 1024
EMBED_CHUNK = 8192
#: bumped when a change to the encoding code changes embeddings, so caches never mix
ENCODER_VERSION = 2
#: the same for packed sequences alone (2: packed batches budget real tokens, not padded positions)
PACKING_VERSION = 2


def chunk_bounds(count: int, first: int) -> list[tuple[int, int]]:
    """(start, end) of `embed`'s chunks of `count` texts: `first` texts, doubling up to EMBED_CHUNK."""
    bounds, start, size = [], 0, min(first, EMBED_CHUNK)
    while start < count:
        bounds.append((start, min(start + size, count)))
        start, size = start + size, min(size * 2, EMBED_CHUNK)
    return bounds


class DenseEncoder:
    """A checkpoint and its recipe, on one device, ready to embed either side."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        recipe: EncoderRecipe,
        device: str | None = None,
        dtype: str | None = None,
        max_batch_tokens: int | None = None,
        merge_adapters: bool = True,
        fused_kernels: bool | None = None,
        packed_sequences: bool | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.recipe = recipe
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.max_batch_tokens = int(max_batch_tokens or default_batch_tokens(self.device))
        self.merge_adapters = merge_adapters
        self.pad_multiple = 8 if self.device.type == "cuda" else 1
        self.first_chunk = FIRST_EMBED_CHUNK if self.device.type == "cuda" else EMBED_CHUNK
        self.folder = checkpoint.folder / recipe.transformer_path
        for side in SIDES:  # now, not when the side is first encoded (after the whole corpus)
            self._adapter_folder(side)
        self.tokenizer = self._load_tokenizer()
        self.projections = load_projections(
            checkpoint.folder, recipe.dense_layers, checkpoint.source, self.device
        )
        config = jina_kernels.fusable_config(self.folder)
        source = checkpoint.source
        self.fused_kernels = fused_kernels_chosen(source, config, self.device, self.dtype, fused_kernels)
        self.packed_sequences = packing_chosen(
            source, config, self.device, self.dtype, self.fused_kernels, packed_sequences
        )
        self._side: str | None = None
        self._model: torch.nn.Module | None = None
        self.stats = {"forward_passes": 0, "out_of_memory_retries": 0, "tokens": 0, "positions": 0}

    # -- identity ---------------------------------------------------------------------------------

    def identity(self, side: str) -> dict[str, Any]:
        """What decides `side`'s embeddings: weights, recipe, dtype, device type, code version."""
        return {
            "encoder": self.checkpoint.key_identity(),  # a moved copy of a folder is the same encoder
            "recipe": self.recipe.side_identity(side),
            "dtype": dtype_name(self.dtype),
            "device": self.device.type,
            **cpu_threads(self.device),
            "merge_adapters": self.merge_adapters if self.recipe.adapter(side) else None,
            # batch composition moves the last bits of a vector, so the budget that forms batches
            # is part of what decides them
            "max_batch_tokens": self.max_batch_tokens,
            "pad_multiple": self.pad_multiple,
            # the kernels' version when on: their arithmetic decides the last bits
            "fused_kernels": jina_kernels.FUSED_KERNELS_VERSION if self.fused_kernels else False,
            # only when on, so that the keys of caches made before the setting existed still hold
            **({"packed_sequences": PACKING_VERSION} if self.packed_sequences else {}),
            "encoder_version": ENCODER_VERSION,
        }

    def made_with(self) -> dict[str, str]:
        """What encodes, beyond what keys the cache: the libraries whose code and kernels can move a
        vector's last bits, and the device. Left out of the key on purpose (upgrading torch must
        not encode a corpus of millions again); written with each shard instead, so that a run
        names what made the vectors it searched, which may be another version than the one running."""
        from rerank_eval.results.provenance import package_versions

        libraries = ("torch", "transformers", "tokenizers", *(("peft",) if self.recipe.adapters else ()))
        versions = package_versions()
        return {**{name: str(versions[name]) for name in libraries}, "device": device_name(self.device)}

    # -- loading ----------------------------------------------------------------------------------

    def _load_tokenizer(self) -> Any:
        import transformers

        try:
            with quiet_transformers():
                return transformers.AutoTokenizer.from_pretrained(str(self.folder))
        except Exception as exc:  # a damaged or foreign tokenizer file fails in many ways
            raise UserError(
                f"cannot load the tokenizer of encoder {self.checkpoint.source}: {describe(exc)}"
            ) from None

    def _load_model(self, side: str) -> torch.nn.Module:
        import transformers

        model_class = getattr(transformers, encoder_class(self.folder))
        config = read_config(
            lambda: transformers.AutoConfig.from_pretrained(str(self.folder)), self.checkpoint.source
        )
        check_config_fits_weights(self.folder, self.checkpoint.source, config, model_class.from_config)
        check_tokenizer_fits_config(self.tokenizer, config, self.checkpoint.source)
        try:
            with quiet_transformers():
                model = model_class.from_pretrained(
                    str(self.folder),
                    config=config,
                    dtype=self.dtype,
                    attn_implementation="sdpa",
                    **MODEL_LOAD_OPTIONS,
                )
        except Exception as exc:  # missing, truncated or foreign weights fail in many ways
            raise UserError(f"cannot load encoder {self.checkpoint.source}: {describe(exc)}") from None
        folder = self._adapter_folder(side)
        if folder is not None:
            model = self._with_adapter(model, folder)
        if not jina_kernels.use_fused_modules(model, self.fused_kernels) and self.fused_kernels:
            raise UserError(  # a config naming the architecture over weights of another
                f"encoder {self.checkpoint.source}: its config names jina_embeddings_v3 but the model "
                f"has no JinaEmbeddingsV3 layers; set the first stage's fused_kernels to false"
            )
        return model.to(self.device).eval()

    def _adapter_folder(self, side: str) -> Path | None:
        """The folder of `side`'s PEFT adapter (None without one); a missing one is a UserError."""
        adapter = self.recipe.adapter(side)
        if not adapter:
            return None
        folder = inside_checkpoint(
            self.checkpoint.folder, adapter, f"encoder {self.checkpoint.source}: adapter"
        )
        weights = [name for name in ADAPTER_WEIGHTS if (folder / name).is_file()]
        if not (folder / "adapter_config.json").is_file() or not weights:
            raise UserError(
                f"encoder {self.checkpoint.source} has no adapter {adapter!r} "
                f"(needs {adapter}/adapter_config.json and {adapter}/{ADAPTER_WEIGHTS[0]})"
            )
        return folder

    def _with_adapter(self, model: torch.nn.Module, folder: Path) -> torch.nn.Module:
        from peft import PeftModel

        try:
            with quiet_transformers(), warnings.catch_warnings():
                # PEFT asks transformers a deprecated question; nothing the user can act on
                warnings.simplefilter("ignore", FutureWarning)
                adapted = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
        except Exception as exc:  # a damaged adapter config or weights
            raise UserError(
                f"cannot load adapter {folder.name} of encoder {self.checkpoint.source}: {describe(exc)}"
            ) from None
        return adapted.merge_and_unload() if self.merge_adapters else adapted

    def model(self, side: str) -> torch.nn.Module:
        """The model for `side`; with per-side adapters only one side is held at a time."""
        if self._model is None or (self._side != side and self.recipe.adapters):
            self._model = None
            # outside `embed`'s inference mode: weights moved to a GPU there would be inference
            # tensors, unlike those the compile trial made, and the fused kernels would be compiled
            # once more in the middle of the first batches (seen on the H200)
            with torch.inference_mode(False):
                self._model = self._load_model(side)
        self._side = side
        return self._model

    def unload(self) -> None:
        """Let go of the model (its device memory is freed once nothing else holds it)."""
        self._model, self._side = None, None

    # -- tokenization -----------------------------------------------------------------------------

    def texts_for(self, texts: Sequence[str], side: str) -> list[str]:
        """The model's input strings: prefix (prompt) prepended, lower-cased where the recipe says."""
        prefix = self.recipe.prefix(side)
        joined = [prefix + text for text in texts]
        return [text.lower() for text in joined] if self.recipe.lowercase else joined

    def tokenize(self, texts: Sequence[str], side: str) -> list[list[int]]:
        limit = self.recipe.max_length
        inputs = self.texts_for(texts, side)
        return tokenized(self.tokenizer, inputs, limit, truncation=True, max_length=limit)

    # -- forward ----------------------------------------------------------------------------------

    def _forward(self, rows: Sequence[Sequence[int]], side: str) -> torch.Tensor:
        """Pooled (projected, normalised) float32 vectors of a batch as the recipe says, on the device."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        padded = None if self.packed_sequences else pad
        check_token_ids_fit(rows, self.model(side), f"encoder {self.checkpoint.source}", f"a {side}", padded)
        tokens = int(sum(len(r) for r in rows))
        if self.packed_sequences:
            vectors, positions = self._packed_vectors(rows, side), tokens
        else:
            ids, mask = right_padded(rows, pad, self.pad_multiple)
            mask = to_device(mask, self.device)
            given = jina_kernels.padding_mask_4d(mask) if self.fused_kernels else mask
            model = self.model(side)
            hidden = model(input_ids=to_device(ids, self.device), attention_mask=given).last_hidden_state
            vectors, positions = pool(hidden, mask, self.recipe.pooling), ids.numel()
        self.stats["forward_passes"] += 1
        self.stats["tokens"] += tokens
        self.stats["positions"] += positions  # padding included: what the bench calls work run
        vectors = project(vectors, self.projections)
        if self.recipe.dimensions is not None:
            vectors = vectors[:, : self.recipe.dimensions]
        return torch.nn.functional.normalize(vectors, p=2, dim=1) if self.recipe.normalize else vectors

    def _packed_vectors(self, rows: Sequence[Sequence[int]], side: str) -> torch.Tensor:
        """Pooled vectors of texts run end to end in one row (`pool_packed`)."""
        packed = jina_kernels.pack(rows)
        hidden = self.model(side)(
            input_ids=to_device(packed.ids, self.device),
            position_ids=to_device(packed.positions, self.device),
            packing=jina_kernels.Packing(to_device(packed.starts, self.device), packed.bounds),
        ).last_hidden_state[0]
        pooling, budget = self.recipe.pooling, self.max_batch_tokens
        return pool_packed(hidden, packed.bounds, pooling, budget, self.pad_multiple)

    @torch.inference_mode()
    def queue_tokens(
        self, rows: Sequence[Sequence[int]], side: str, progress: Callable[[float], None] | None = None
    ) -> QueuedVectors:
        """Every batch of tokenized texts queued on the device, longest first under the token budget,
        and the vectors' copy back to the host queued after them. `progress` is told, after each
        batch, the share of the work done (positions run, padding included: the longest texts go
        first, so a count of texts would promise a rate they do not keep) where the device runs a
        batch as it is queued (a CPU); on a GPU the batches are only queued here, and whoever takes
        the result counts them.

        The host never waits for the device here, so a caller can queue the next chunk before it
        takes this one's `result()`: the device then runs from one chunk into the next without
        idling while the host reorders, checks or writes vectors. Out of memory splits the failing
        batch alone (under half its budget, again if need be): every other batch is formed as in a
        run that never ran out, so a resumed run matches it.
        """
        lengths = [len(r) for r in rows]
        pending = [(batch, self.max_batch_tokens) for batch in self._batches(lengths, self.max_batch_tokens)]
        done: list[tuple[list[int], torch.Tensor]] = []
        total_cost, done_cost = sum(self._cost(batch, lengths) for batch, _ in pending), 0
        while pending:
            batch, budget = pending.pop(0)
            try:
                done.append((batch, self._forward([rows[i] for i in batch], side)))
            except OUT_OF_MEMORY:
                pending = self._split(batch, budget, lengths) + pending
                continue
            done_cost += self._cost(batch, lengths)
            if progress is not None and self.device.type == "cpu":  # (CUDA, MPS: only queued)
                progress(min(1.0, done_cost / max(total_cost, 1)))  # (split batches cost less)
        if not done:
            return QueuedVectors([], torch.empty((0, 0)), None)
        return QueuedVectors.copied_back(
            [i for batch, _ in done for i in batch], torch.cat([v for _, v in done])
        )

    def _split(self, batch: list[int], budget: int, lengths: list[int]) -> list[tuple[list[int], int]]:
        release_cached_memory()
        if len(batch) == 1:
            raise UserError(
                f"one text of {lengths[batch[0]]:,} tokens does not fit in GPU memory even alone "
                f"(encoder {self.checkpoint.source}); lower the first stage's max_length"
            )
        if not self.stats["out_of_memory_retries"]:
            print(
                f"out of GPU memory in a batch of {budget:,} tokens; it is split (set the first stage's "
                f"max_batch_tokens lower to avoid retries)",
                file=sys.stderr,
            )
        self.stats["out_of_memory_retries"] += 1
        half = max(1, budget // 2)
        parts = self._batches([lengths[i] for i in batch], half)
        return [([batch[i] for i in part], half) for part in parts]

    def _cost(self, batch: list[int], lengths: list[int]) -> int:
        """The positions a batch runs: its texts' tokens packed, else its texts × the longest."""
        if self.packed_sequences:
            return sum(lengths[i] for i in batch)
        return len(batch) * max(lengths[i] for i in batch)

    def _batches(self, lengths: list[int], budget: int) -> list[list[int]]:
        """Indices in batches, longest texts first: under `budget` positions run, padding included
        (texts × the longest, rounded up), or with `packed_sequences`, where nothing is padded, under
        `budget` tokens (so a packed batch holds more texts for the same memory)."""
        if not self.packed_sequences:
            return token_budget_batches(lengths, budget)
        order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
        return [[order[i] for i in part] for part in packed_batches([lengths[i] for i in order], budget)]

    def embed(self, texts: Sequence[str], side: str) -> np.ndarray:
        """Float32 vectors of `texts`; each distinct text is encoded once."""
        distinct = list(dict.fromkeys(texts))
        if not distinct:  # (a tokenizer refuses an empty batch)
            return np.empty((0, 0), dtype=np.float32)
        chunks = [distinct[start:end] for start, end in chunk_bounds(len(distinct), self.first_chunk)]
        parts: list[np.ndarray] = []
        queued: QueuedVectors | None = None
        # the next chunk is tokenized in a background thread while the device runs this one, and
        # queued on the device before this one's vectors are taken back
        with ThreadPoolExecutor(max_workers=1) as tokenizing:
            pending = tokenizing.submit(self.tokenize, chunks[0], side)
            for index in range(len(chunks)):
                rows = pending.result()
                if index + 1 < len(chunks):
                    pending = tokenizing.submit(self.tokenize, chunks[index + 1], side)
                following = self.queue_tokens(rows, side)
                if queued is not None:
                    parts.append(queued.result())
                queued = following
        parts.append(queued.result())
        vectors = np.concatenate(parts)
        if len(distinct) == len(texts):
            return vectors
        position = {text: i for i, text in enumerate(distinct)}
        return vectors[[position[text] for text in texts]]

    @torch.inference_mode()
    def embed_straightforward(self, texts: Sequence[str], side: str, batch_size: int = 32) -> np.ndarray:
        """sentence-transformers' way: fixed-size batches in input order, every text encoded."""
        parts = []
        for start in range(0, len(texts), batch_size):
            rows = self.tokenize(texts[start : start + batch_size], side)
            parts.append(self._forward(rows, side).cpu().numpy())
        return np.concatenate(parts) if parts else np.empty((0, 0), dtype=np.float32)
