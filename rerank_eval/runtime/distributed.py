"""Several processes (torchrun, one per GPU, one or many nodes): queries are sharded across ranks.

Every rank loads the data (rank 0 first, so caches are built once), scores the chunks of queries
(see pipeline.score.query_chunks) whose position is congruent to its rank, and journals them in its own
file (the chunks are the same for any number of ranks, so are the scores); rank 0 then reads
every rank's journal and evaluates and publishes, so the result is the single-process one.
Without torchrun's environment everything is one rank.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

from rerank_eval.errors import UserError, describe


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            with peers_present("waiting for the other ranks"):
                dist.barrier()

    def owns(self, position: int) -> bool:
        return position % self.world == self.rank


#: what gloo and NCCL say when a peer process has gone
_PEER_GONE = ("peer", "connection reset", "broken pipe", "remote worker")


@contextlib.contextmanager
def peers_present(doing: str) -> Iterator[None]:
    """A collective whose peer has stopped (its own error line says why) ends this rank with one
    line too, not a traceback from gloo ("Connection closed by peer"). Only that: this rank's own
    failures inside the collective (out of GPU memory while NCCL stages the data) stay what they
    are. Under NCCL a dead peer is usually noticed by its watchdog or torchrun instead."""
    import torch.distributed as dist

    from rerank_eval.models.common import OUT_OF_MEMORY

    try:
        yield
    except OUT_OF_MEMORY:
        raise
    except RuntimeError as exc:
        network = isinstance(exc, dist.DistNetworkError)
        if not network and not any(words in str(exc).lower() for words in _PEER_GONE):
            raise
        raise UserError(
            f"rank {ranks().rank}: another rank stopped while {doing} ({describe(exc)}); "
            "its own message says why"
        ) from None


@cache
def ranks() -> Ranks:
    """This process's place in a torchrun job (initialising the process group once)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        # Ranks wait at barriers while rank 0 downloads and builds (a doc store, a BM25 index):
        # far longer than the 10-minute default of NCCL's collectives.
        minutes = float(os.environ.get("RERANK_EVAL_RANK_WAIT_MINUTES", "360"))
        dist.init_process_group(backend, timeout=timedelta(minutes=minutes))
    return Ranks(dist.get_rank(), world, local_rank)


def leave_job() -> None:
    """End this rank's process at once after a command that succeeded here, its output flushed.
    Left to the interpreter's exit, gloo's worker threads may still hold tensors as the interpreter
    is torn down, and the rank ends in SIGABRT ("terminate called without an active exception"),
    now and then, and torchrun fails the job; destroying the process group first made it rarer, not
    gone (seen once more in CI). What the command wrote is closed by then; nothing is left for the
    interpreter's exit to do. Not after a failure: its error is said on the way out as ever."""
    distributed = sys.modules.get("torch.distributed")  # (a command that never started a job: none)
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def default_device() -> str | None:
    """Each rank on its own GPU under torchrun; None (the usual default) otherwise."""
    import torch

    current = ranks()
    if current.world > 1 and torch.cuda.is_available():
        return f"cuda:{current.local_rank}"
    return None


def agreed(value: Any) -> Any:
    """Rank 0's value on every rank: a decision read from disk is taken once for all ranks, so
    they never take different paths through the collectives."""
    if ranks().world == 1:
        return value
    import torch.distributed as dist

    holder = [value]
    with peers_present("taking rank 0's decision"):
        dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_gathered(tensor: Any) -> list[Any]:
    """Every rank's tensor of the same shape (on CPUs), through the GPU under NCCL."""
    if ranks().world == 1:
        return [tensor]
    import torch
    import torch.distributed as dist

    nccl = dist.get_backend() == "nccl"
    local = tensor.to(torch.device("cuda", torch.cuda.current_device())) if nccl else tensor
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    with peers_present("gathering every rank's results"):
        dist.all_gather(parts, local)
    return [part.cpu() for part in parts]


def all_gathered_objects(value: Any) -> list[Any]:
    """Every rank's (picklable) value, in rank order."""
    if ranks().world == 1:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    with peers_present("gathering every rank's results"):
        dist.all_gather_object(gathered, value)
    return gathered
