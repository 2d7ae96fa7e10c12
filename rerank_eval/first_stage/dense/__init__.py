"""`kind: dense`: an encoder over the whole corpus and exact inner-product search (the paper's
protocol: jina-embeddings-v3's top-100).

Queries and corpus are embedded by `DenseEncoder` (recipe from the checkpoint's files and the
preset), the corpus once into the sharded cache (`corpus`), searched exactly shard by shard
(`search`), under torchrun each rank its own shards with the local top-k merged. The run is kept
as a TREC file in the cache under a key of everything that decides it, so a second run with the
same encoder, queries and depth loads no model at all.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rerank_eval.cache import cache_key, cache_root
from rerank_eval.errors import UserError
from rerank_eval.first_stage.base import FirstStageKind, FirstStageRecord, FirstStageRequest, Setting
from rerank_eval.first_stage.registry import register
from rerank_eval.paths import file_name
from rerank_eval.runfiles import Run, read_run
from rerank_eval.runtime.progress import step

if TYPE_CHECKING:
    from rerank_eval.config.schema import DatasetSpec, FirstStageSpec


def _key_digest(parts: dict[str, Any]) -> str:
    return cache_key(parts)[:20]


#: the settings that are part of an encoder's recipe (first_stage/dense/recipe.py)
RECIPE_SETTINGS = (
    "pooling", "normalize", "max_length", "dimensions", "query_prefix", "passage_prefix", "adapters"
)  # fmt: skip


class DenseRetrieval(FirstStageKind):
    name = "dense"
    device_keyed = True
    settings: ClassVar[dict[str, Setting]] = {
        "encoder": Setting(str, required=True),  # a Hub id or a checkpoint directory
        "revision": Setting(str),
        "package": Setting(str),  # a Python package that ships the encoder's files (used when installed)
        "pooling": Setting(str, choices=("mean", "cls", "lasttoken", "max")),
        "normalize": Setting(bool),
        "max_length": Setting(int, bounds=(1, 1_048_576)),
        "dimensions": Setting(int, bounds=(1, 1_048_576)),  # Matryoshka: the first N coordinates
        "query_prefix": Setting(str),
        "passage_prefix": Setting(str),
        "adapters": Setting(dict),  # {query: SUBFOLDER, passage: SUBFOLDER} of PEFT adapters
        # how the run is computed, not which first stage it is (execution_only: see Setting)
        "merge_adapters": Setting(bool, True, execution_only=True),
        # jina-embeddings-v3's fused kernels (jina_kernels); unset: on CUDA where Triton works
        "fused_kernels": Setting(bool, execution_only=True),
        # texts packed end to end without padding, in the fused kernels; unset: on CUDA where they run
        "packed_sequences": Setting(bool, execution_only=True),
        "dtype": Setting(str, choices=("float32", "bfloat16", "float16"), execution_only=True),
        "storage": Setting(str, "float16", choices=("float16", "float32"), execution_only=True),
        "shard_size": Setting(int, 65_536, bounds=(1, 10_000_000), execution_only=True),
        "max_batch_tokens": Setting(int, bounds=(1, 100_000_000), execution_only=True),
        "query_batch": Setting(int, 1024, bounds=(1, 1_000_000), execution_only=True),
    }

    def __init__(self) -> None:
        # the last encoder built, reused by the next dataset with the same settings (no reload)
        self._last_encoder: tuple[str, Any] | None = None

    def validate(self, where: str, settings: dict[str, Any]) -> dict[str, Any]:
        checked = super().validate(where, settings)
        adapters = checked["adapters"]
        if adapters is not None and (
            set(adapters) - {"query", "passage"} or not all(isinstance(v, str) for v in adapters.values())
        ):
            raise UserError(
                f"{where}.adapters: expected {{query: SUBFOLDER, passage: SUBFOLDER}}, got {adapters!r}"
            )
        return checked

    def changed(self, settings: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        """A `package` ships the entry's own encoder: another encoder or revision is not in it."""
        unpackaged = {"package": None} if {"encoder", "revision"} & set(changes) else {}
        return {**settings, **unpackaged, **changes}

    def from_argument(self, argument: str, first_stages: dict[str, FirstStageSpec]) -> FirstStageSpec:
        from rerank_eval.config.schema import FirstStageSpec

        preset = first_stages.get(argument)
        if preset is not None and preset.kind == self.name:
            return preset
        return FirstStageSpec(
            name=f"dense:{argument}",
            kind=self.name,
            label=f"dense {argument} (exact inner product)",
            settings=self.validate(f"first stage dense:{argument}", {"encoder": argument}),
        )

    def preflight(self, spec: DatasetSpec, source: FirstStageSpec) -> None:
        """Before any work: an encoder that names no folder and no Hub id (and no package ships it)
        is refused, with the packaged dense presets a typo may have meant (`dense:minilmm`), and so
        is a revision that is no ref name."""
        from rerank_eval.config.reader import load_config
        from rerank_eval.errors import did_you_mean
        from rerank_eval.hub import revision_problem
        from rerank_eval.models.checkpoint import not_a_model_source

        revision = source.settings["revision"]
        wrong = revision_problem(revision) if revision is not None else None
        if wrong:
            raise UserError(f"first stage {source.name}: {wrong}")
        problem = None if source.settings["package"] else not_a_model_source(source.settings["encoder"])
        if problem:
            presets = sorted(
                name for name, entry in load_config().first_stages.items() if entry.kind == self.name
            )
            hint = did_you_mean(source.settings["encoder"], presets)
            raise UserError(
                f"first stage {source.name}: {problem}, nor one of the dense presets "
                f"({', '.join(presets)}){hint}"
            )

    # -- the pieces -------------------------------------------------------------------------------

    def encoder(self, settings: dict[str, Any]):
        """The encoder of a first stage's settings (tokenizer loaded; the model only when used)."""
        wanted = json.dumps(settings, sort_keys=True, default=str)
        if self._last_encoder is None or self._last_encoder[0] != wanted:
            self._last_encoder = None  # one encoder in memory at a time
            self._last_encoder = (wanted, self.build_encoder(settings))
        return self._last_encoder[1]

    @staticmethod
    def build_encoder(settings: dict[str, Any]):
        from rerank_eval.first_stage.dense.encoder import DenseEncoder
        from rerank_eval.first_stage.dense.recipe import read_recipe
        from rerank_eval.models.checkpoint import model_checkpoint
        from rerank_eval.runtime.distributed import default_device

        checkpoint = model_checkpoint(settings["encoder"], settings["package"], settings["revision"])
        overrides = {name: settings[name] for name in RECIPE_SETTINGS}
        recipe = read_recipe(checkpoint.folder, checkpoint.source, overrides)
        return DenseEncoder(
            checkpoint, recipe, device=default_device(), dtype=settings["dtype"],
            max_batch_tokens=settings["max_batch_tokens"], merge_adapters=settings["merge_adapters"],
            fused_kernels=settings["fused_kernels"], packed_sequences=settings["packed_sequences"],
        )  # fmt: skip

    @staticmethod
    def corpus_cache(request: FirstStageRequest, encoder):
        from rerank_eval.datasets.ir_dataset import DOCUMENT_TEXT
        from rerank_eval.first_stage.dense.corpus import CACHE_FORMAT, CorpusEmbeddings

        settings = request.source.settings
        key = {
            "format": CACHE_FORMAT,
            "corpus": request.dataset.corpus_id(),
            "document_text": DOCUMENT_TEXT,
            "passage": encoder.identity("passage"),
            "storage": settings["storage"],
            "shard_size": settings["shard_size"],
        }
        folder = cache_root() / "dense" / f"{file_name(request.dataset.corpus_id())}-{_key_digest(key)}"
        return CorpusEmbeddings(folder, settings["shard_size"], settings["storage"]), key

    def ensure_corpus(
        self, request: FirstStageRequest, encoder
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """The complete corpus cache (encoding what is missing, each rank its shards)."""
        from rerank_eval.first_stage.dense.encoding import encode_corpus
        from rerank_eval.runtime.distributed import agreed, ranks

        cache, key = self.corpus_cache(request, encoder)
        shard = ranks()
        # rank 0 checks and decides (others would read the same gigabytes of headers and hashes),
        # so ranks never take different paths; where it refuses, the others stop with it
        info = agreed(cache.complete() if shard.is_main else None)
        if info is None:  # an older cache, or order files deleted: finished again by rank 0 alone
            info = agreed(cache.refinished() if shard.is_main else None)
        report: dict[str, Any] = {"encoded_passages": 0, "encode_seconds": 0.0}
        if info is not None:
            return cache, info, report
        if shard.is_main:
            cache.create(key)
        shard.barrier()
        count = request.dataset.documents_count() or 0
        encoded, seconds, waited = 0, 0.0, 0.0
        try:
            while True:  # again only for shards another process claimed and ended without writing
                done = encode_corpus(
                    cache, request.dataset.iter_documents(), count, encoder, shard.rank, shard.world,
                    label=f"encoding {request.spec.key} ({encoder.checkpoint.source})",
                )  # fmt: skip
                encoded, seconds = encoded + done.encoded_passages, seconds + done.seconds
                waited += done.waited_seconds
                if not done.left_unwritten:
                    break
                unwritten = len(done.left_unwritten)
                them = "them" if unwritten != 1 else "it"
                print(
                    f"another process claimed {unwritten:,} shard{'s' * (unwritten != 1)} and ended "
                    f"without writing {them}; encoding {them} here",
                    file=sys.stderr,
                )
            if done.documents == 0:
                raise UserError(f"{request.dataset.id} has no documents to encode")
        except UserError:  # a corpus refused while read, or empty: no empty cache folder is left
            if shard.is_main:
                cache.discard_if_unused()
            raise
        report = {"encoded_passages": encoded, "encode_seconds": round(seconds, 3)}
        if waited:  # for the shards other processes sharing the cache claimed
            report["waited_seconds"] = round(waited, 3)
        shard.barrier()
        if shard.is_main:
            cache.finish(done.shards, done.documents, done.corpus_sha256)
        shard.barrier()
        return cache, agreed(cache.complete() if shard.is_main else None), report

    def fetch_model(self, source: FirstStageSpec) -> str | None:
        return self.encoder(source.settings).checkpoint.source

    def fetch(self, request: FirstStageRequest, build: bool = True) -> None:
        encoder = self.encoder(request.source.settings)
        if not build:
            return
        cache = self.corpus_cache(request, encoder)[0]
        if cache.complete() is not None:
            print(f"{request.spec.key}: its corpus embeddings are cached already", file=sys.stderr)
            return
        if encoder.device.type == "cpu":
            print(
                f"note: encoding {request.spec.key} on the CPU; a run on a GPU (another device "
                f"and dtype) uses embeddings of its own, so encode where you will run (fetch "
                f"--no-encode downloads only)",
                file=sys.stderr,
            )
        self.ensure_corpus(request, encoder)

    # -- the run ----------------------------------------------------------------------------------

    def obtain(self, request: FirstStageRequest) -> tuple[Run, FirstStageRecord]:
        from rerank_eval.first_stage.dense.corpus import pairs_sha256
        from rerank_eval.first_stage.dense.run_cache import kept_run, run_corpus
        from rerank_eval.runtime.distributed import agreed, ranks

        settings = request.source.settings
        encoder = self.encoder(settings)
        corpus_key = self.corpus_cache(request, encoder)[1]
        query_key = {
            "corpus": corpus_key,
            "query": encoder.identity("query"),
            "queries_sha256": pairs_sha256(request.queries.items()),
            "depth": request.depth,
            # the shape of each product may decide its summation order (cuBLAS picks per shape)
            "query_batch": settings["query_batch"],
        }
        run_path = (
            cache_root() / "dense" / "runs" / f"{file_name(request.dataset.id)}-{_key_digest(query_key)}.trec"
        )
        execution: dict[str, Any] = {"run_cached": agreed(kept_run(run_path) if ranks().is_main else None)}
        if not execution["run_cached"]:
            execution.update(self._search(request, encoder, run_path))
        ranks().barrier()
        parsed = read_run(run_path)
        info = {key: value for key, value in run_corpus(run_path).items() if key != "run_sha256"}
        record = FirstStageRecord(
            kind=self.name,
            label=request.source.label,
            path=str(run_path),
            sha256=parsed.sha256,
            revision=encoder.checkpoint.revision,
            settings={
                "encoder": encoder.checkpoint.identity(),
                "recipe": encoder.recipe.to_json(),
                "dtype": encoder.identity("passage")["dtype"],
                "device": encoder.device.type,
                "merge_adapters": settings["merge_adapters"],
                "fused_kernels": encoder.fused_kernels,
                "packed_sequences": encoder.packed_sequences,
                "storage": settings["storage"],
                "shard_size": settings["shard_size"],
                # batch composition moves a vector's last bits: the budget in effect, not the setting
                "max_batch_tokens": encoder.max_batch_tokens,
                "pad_multiple": encoder.pad_multiple,
                "query_batch": settings["query_batch"],
                "depth": request.depth,
                "search": "exact inner product, float32 scores; ties by doc id as trec_eval",
                **info,
            },
            **request.reference_fields(),
            execution=execution,
        )
        return parsed.run, record

    def _search(self, request: FirstStageRequest, encoder, run_path: Path) -> dict[str, Any]:
        """Encode what is missing, search this rank's shards, merge every rank's top-k, write the run."""
        import numpy as np

        from rerank_eval.first_stage.dense.run_cache import write_run
        from rerank_eval.first_stage.dense.search import exact_search, keys_to_run, merge_top_k
        from rerank_eval.runtime.distributed import all_gathered, all_gathered_objects, ranks

        shard = ranks()
        cache, info, timings = self.ensure_corpus(request, encoder)
        query_ids = list(request.queries)
        start = time.monotonic()
        with step(f"{request.spec.key}: encoding {len(query_ids):,} queries"):
            vectors = encoder.embed([request.queries[q] for q in query_ids], "query")
        if not np.isfinite(vectors).all():
            # caught before the run is written: a run file in the cache is used as it is
            raise UserError(
                f"encoder {encoder.checkpoint.source} gave a query vector of {request.spec.key} that is "
                f"not finite; no run is kept"
            )
        if vectors.shape[1] != info["dimension"]:
            raise UserError(
                f"the corpus embeddings in {cache.folder} are {info['dimension']} wide and the query "
                f"vectors {vectors.shape[1]}; delete that folder to encode the corpus again"
            )
        timings["query_seconds"] = round(time.monotonic() - start, 3)
        start = time.monotonic()
        owned = (cache.shard_with_ranks(i) for i in range(info["shards"]) if i % shard.world == shard.rank)
        with step(f"{request.spec.key}: exact search of {info['documents']:,} passages"):
            keys = exact_search(
                vectors, owned, request.depth, encoder.device, request.source.settings["query_batch"]
            )
            if shard.world > 1:
                keys = merge_top_k(all_gathered(keys), request.depth)
        timings["search_seconds"] = round(time.monotonic() - start, 3)
        per_rank = all_gathered_objects({"rank": shard.rank, **timings})
        if shard.is_main:
            corpus = {"corpus_documents": info["documents"], "corpus_sha256": info["corpus_sha256"]}
            # what encoded the corpus (not always what runs now); caches completed before it was
            # recorded have none
            recorded = ("encoded_with", "shards_without_encoder_record")
            corpus.update({key: info[key] for key in recorded if key in info})
            run = keys_to_run(keys, query_ids, cache.ids_sorted())
            scores = (item for docs in run.values() for item in docs.items())
            if (bad := next((doc for doc, score in scores if not math.isfinite(score)), None)) is not None:
                damaged = cache.shard_holding(bad).name  # (its vectors were finite when written)
                raise UserError(
                    f"the corpus embeddings in {cache.folder} give a score that is not finite (document "
                    f"{bad}); delete {damaged} and run again to encode it again"
                )
            write_run(run_path, run, corpus)
        return {"ranks": per_rank}


register(DenseRetrieval())
