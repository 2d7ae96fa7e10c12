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
def compiled(function: Any, *, every_size_dynamic: bool = False) -> Any:
    """One torch.compile per function, for every number of rows.

    Callers pass tensors flattened to (rows, ...): a batch dimension would be compiled once more
    when it is 1 (torch.compile specialises sizes 0 and 1), in the middle of a run. The rows of
    every tensor of two or more dimensions are marked dynamic, every other size static, at each
    call: widths, heads and head sizes are compiled in as constants, one kernel per model shape.
    With every size symbolic (`dynamic=True`) Inductor indexes with run-time divisions and loops
    its reductions, and the encoder's rotary and add-LayerNorm kernels ran at about a quarter of
    the H200's bandwidth (docs/performance.md); left to automatic dynamic shapes, a process that
    had compiled two model shapes would make every size symbolic for all later ones.
    `every_size_dynamic` compiles every size as symbolic, as the reranker's kernels are (its
    queries and keys have different head counts; measured that way).
    """
    if every_size_dynamic:
        return torch.compile(function, dynamic=True)
    kernel = torch.compile(function)

    @functools.wraps(function)
    def rows_dynamic(*args: Any) -> Any:
        for tensor in args:
            if isinstance(tensor, torch.Tensor):
                rows = tensor.dim() >= 2
                if rows:
                    torch._dynamo.maybe_mark_dynamic(tensor, 0)
                torch._dynamo.mark_static(tensor, tuple(range(int(rows), tensor.dim())))
        return kernel(*args)

    return rows_dynamic


#: the rows of a compile trial's call: a batch's worth, since Triton picks a kernel's launch
#: configuration by timing its first call (the configuration stays for every later size)
TRIAL_ROWS = 4096


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


def rotary(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' rotary embedding, `states * cos + rotate_half(states) * sin`, of (tokens, heads,
    d) states with (tokens, d) cos and sin, written for Inductor to fuse into one pass.

    `rotate_half` concatenates the negated second half with the first, and Inductor realises that
    concatenation as a tensor of its own before the multiply-add: each of queries and keys is read
    twice and written twice (seen in its generated code), and on an H200 the rotary kernel ran at a
    quarter of the memory bandwidth. Here the halves are turned in place (a flip of the two halves
    and a sign), the same numbers, as negation is exact: the same bits as transformers' formula,
    compiled or not (tests), in one kernel that reads each input once."""
    halves = states.unflatten(-1, (2, -1))
    sign = torch.tensor([-1.0, 1.0], dtype=states.dtype, device=states.device).view(2, 1)
    turned = (halves.flip(-2) * sign).flatten(-2)
    return states * cos.unsqueeze(-2) + turned * sin.unsqueeze(-2)
