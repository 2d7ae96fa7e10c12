"""Whether the dense encoder runs jina-embeddings-v3's fused kernels and packed sequences here:
as asked, or by default where they build, decided by every rank of a torchrun job together (each
rank's shards go into the cache folder the setting keys)."""

from __future__ import annotations

import sys
from typing import Any

import torch

from rerank_eval.compiling import compile_by_default
from rerank_eval.errors import UserError
from rerank_eval.first_stage.dense import jina_kernels


def fused_kernels_chosen(
    source: str, config: Any | None, device: torch.device, dtype: torch.dtype, requested: bool | None
) -> bool:
    """Fused kernels as asked (None: on CUDA with Triton), for jina-embeddings-v3's backbone only;
    checked by compiling them now. Asked for and impossible: a one-line error; by default and
    impossible: transformers' modules, said once on stderr. Under torchrun the ranks decide
    together: each rank's shards go into the cache folder the setting keys."""
    from rerank_eval.runtime.distributed import all_gathered_objects, ranks

    if config is None:
        if requested:
            print(
                f"fused_kernels: encoder {source} is not jina-embeddings-v3's "
                f"architecture; it runs transformers' modules",
                file=sys.stderr,
            )
        return False
    if not (compile_by_default(device) if requested is None else requested):
        return False
    failure = jina_kernels.compile_failure(config, device, dtype)
    # every rank gets here alike (same checkpoint and device type): the first rank's failure
    failure = next((f for f in all_gathered_objects(failure) if f), None)
    if failure and requested:
        raise UserError(f"torch.compile cannot build the encoder's kernels on {device}: {failure}")
    if failure and ranks().is_main:  # said once, not by every rank
        print(
            f"torch.compile cannot build kernels on {device} ({failure}); the encoder runs "
            f"transformers' modules",
            file=sys.stderr,
        )
    return not failure


def packing_chosen(
    source: str,
    config: Any | None,
    device: torch.device,
    dtype: torch.dtype,
    fused_kernels: bool,
    requested: bool | None,
) -> bool:
    """Texts packed end to end without padding, attention kept within each (`jina_kernels`): as
    asked, or by default on CUDA wherever the fused kernels run (an H200 measured it at 2.3 times
    padded batches on first sight of each batch shape and 1.4 times once shapes recur,
    docs/performance.md; on CPUs attention runs text by text and packing is slower). A trial holds
    the varlen kernel to SDPA first. Asked for and impossible: a one-line error; by default and
    impossible: padded batches, said once on stderr. Under torchrun the ranks decide together, as
    for the fused kernels."""
    from rerank_eval.runtime.distributed import all_gathered_objects, ranks

    if requested is False or (requested is None and not (fused_kernels and device.type == "cuda")):
        return False
    if not fused_kernels:
        raise UserError(
            f"packed_sequences runs in the fused kernels of jina-embeddings-v3's architecture; encoder "
            f"{source} does not run them here (set fused_kernels: true, or drop packing)"
        )
    failure = jina_kernels.packing_failure(config, device, dtype)
    failure = next((f for f in all_gathered_objects(failure) if f), None)
    if failure and requested:
        raise UserError(f"packed_sequences cannot run on {device}: {failure}")
    if failure and ranks().is_main:  # said once, not by every rank
        print(
            f"packed_sequences cannot run on {device} ({failure}); the encoder runs padded batches",
            file=sys.stderr,
        )
    return not failure
