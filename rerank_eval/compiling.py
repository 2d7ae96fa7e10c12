"""torch.compile for the few elementwise passes the rerankers and encoders fuse, in one place.

Only small elementwise functions are compiled (never a whole model): they compile in seconds, for
every shape at once, and fall back to eager where a machine cannot build kernels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch


def compile_by_default(device: torch.device) -> bool:
    """Whether to compile by default: on CUDA where Triton supports the GPU (measured on an H200,
    docs/performance.md), off on CPUs, where it gains nothing."""
    from torch.utils._triton import has_triton

    return device.type == "cuda" and has_triton()


@functools.cache
def compiled(function: Any) -> Any:
    """One torch.compile per function, for every shape (dynamic: lengths all differ).

    Callers pass tensors flattened to (tokens, ...): a batch dimension would be compiled once more
    when it is 1 (torch.compile specialises sizes 0 and 1), in the middle of a run.
    """
    return torch.compile(function, dynamic=True)


def trial_failure(trial: Callable[[], Any], device: torch.device) -> str | None:
    """Why `trial` (calls of compiled functions, or of a kernel, on a few tokens) fails here, in one
    line (no C compiler, a GPU that Triton or the kernel does not support, ...); None when it runs.
    It runs in inference mode, as the real calls do, so that they reuse the kernels compiled here."""
    try:
        with torch.inference_mode():
            trial()
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # a kernel that fails to launch fails here
    except Exception as exc:  # Inductor and Triton raise many kinds; all mean "cannot compile here"
        lines = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return None
