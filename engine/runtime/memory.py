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
    return {"process_bytes": _status_bytes("VmHWM"), "cuda_bytes": cuda}


def resident_bytes() -> int | None:
    """What the process holds now (Linux's VmRSS); None where the system does not say."""
    return _status_bytes("VmRSS")


def _status_bytes(field: str) -> int | None:
    """A memory figure of `/proc/self/status` (reported in kB), in bytes; None where there is none."""
    try:
        lines = STATUS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return None
