"""The device side of every bench: its peaks (the datasheet's bf16 one and a measured matrix
product's in the dtype ours runs, the denominators of MFU), waiting for it before a clock is read,
and peak memory."""

from __future__ import annotations

import resource
import time

import torch

from rerank_eval.models.common import device_name

# Datasheet dense bf16 tensor-core peaks (FLOP/s), matched on the CUDA device name.
# The first key contained in the device name wins: the PCIe and NVL parts before the SXM ones (the
# NVL H100 and H200 both 1,671 TFLOP/s with sparsity, 835 dense; the SXM ones 989 dense).
DATASHEET_BF16 = {
    "H100 PCIe": 756e12, "H100 NVL": 835e12, "H200 NVL": 835e12, "H200": 989e12, "H100": 989e12,
    "A100": 312e12, "L40S": 362e12, "A10": 125e12,
}  # fmt: skip


def utilisation(flops_per_second: float, peaks: tuple[float | None, float | None]) -> dict[str, float | None]:
    """Model FLOP utilisation against the datasheet and the measured matmul peak (None where the
    device has no such figure, as a CPU has no datasheet one)."""
    return {
        "mfu_datasheet": round(flops_per_second / peaks[0], 4) if peaks[0] else None,
        "mfu_measured": round(flops_per_second / peaks[1], 4) if peaks[1] else None,
    }


def measured_matmul_peak(device: torch.device, size: int, dtype: torch.dtype) -> float:
    """FLOP/s of a size³ matrix product on the device in `dtype`, the one ours runs (the best of four
    products, the first of them cold): bf16 on a GPU; float32 on a CPU, where a bf16 product is
    emulated, slower than the float32 model it would be the denominator of."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(4):
        synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def datasheet_peak(device: torch.device) -> tuple[str, float | None]:
    name = device_name(device)
    if device.type != "cuda":  # (a CPU, an Apple GPU: no datasheet figure here)
        return name, None
    return name, next((peak for key, peak in DATASHEET_BF16.items() if key in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # process high-water mark
