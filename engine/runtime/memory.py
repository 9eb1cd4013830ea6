"""A job's peak memory: its process's resident memory (Linux's high-water mark, reset as the job starts, so
that a worker process's earlier jobs do not count) and, on CUDA, the memory its tensors took on the device."""

from pathlib import Path

import torch

STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def reset_peak_memory(device: torch.device) -> None:
    """From now on, the peak is this job's (where the system lets a process reset its high-water mark)."""
    try:
        CLEAR_REFS.write_text("5")  # Linux >= 4.0: VmHWM back to the current resident size
    except OSError:
        pass
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, int | None]:
    """`process_bytes`: the most resident memory since the last reset (None where unknown); `cuda_bytes`: the
    most the tensors took on the device (None off CUDA)."""
    cuda = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"process_bytes": _high_water_mark(), "cuda_bytes": cuda}


def _high_water_mark() -> int | None:
    try:
        lines = STATUS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # reported in kB
    return None
