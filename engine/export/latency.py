"""How much faster the student is than its teacher: milliseconds per sample on the worker's device at
batch 1 (one request at a time) and batch 64 (throughput), each model measured the same way: one
warm-up call, then the median of repeated calls for a short while."""

import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

BATCH_SIZES = (1, 64)
BUDGET_SECONDS = 0.05  # per model and batch size: enough for a stable median of small models
MIN_CALLS, MAX_CALLS = 3, 1000


def latency_ms(run: Callable[[Tensor], object], sample: Tensor, device: torch.device) -> dict[str, float]:
    """`{"batch_1": ms, "batch_64": ms}`: milliseconds per sample of `run` on copies of `sample`."""
    return {f"batch_{size}": _ms_per_sample(run, sample, size, device) for size in BATCH_SIZES}


def speedup(teacher: dict[str, float], student: dict[str, float]) -> dict[str, float]:
    return {batch: round(teacher[batch] / student[batch], 3) for batch in teacher}


@torch.no_grad()
def _ms_per_sample(run: Callable[[Tensor], object], sample: Tensor, size: int, device: torch.device) -> float:
    x = sample[:1].expand(size, *sample.shape[1:]).contiguous().to(device)
    run(x)
    seconds, deadline = [], time.perf_counter() + BUDGET_SECONDS
    while len(seconds) < MIN_CALLS or (time.perf_counter() < deadline and len(seconds) < MAX_CALLS):
        start = time.perf_counter()
        run(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return round(1000 * statistics.median(seconds) / size, 5)
