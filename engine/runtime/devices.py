"""Where a job computes: its device, and what is kept on a GPU rather than copied to it at every step."""

import torch

from engine.data.arrays import ArrayDataset
from engine.plan.errors import JobFailed

GPU_SHARE = 0.4  # data moves to the GPU when it takes at most this share of the memory free there


def resolve_device(name: str, devices: int = 1) -> torch.device:
    """The job's device (`training.device`); for `devices` GPUs, their type, once this worker is seen to
    have as many. The CPU runs any number of processes."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise JobFailed(
            "device_unavailable", "device is 'cuda' but this worker has no GPU: use 'auto' or 'cpu'"
        )
    present = torch.cuda.device_count() if name == "cuda" else devices
    if present < devices:
        raise JobFailed(
            "device_unavailable",
            f"training.devices is {devices} but this worker has {present} GPU{'s' if present > 1 else ''}: "
            f"ask for at most {present}, or run the job where there are more",
        )
    return torch.device(name)


def fits_on_gpu(nbytes: int, device: torch.device) -> bool:
    """Whether `nbytes` of data may live on `device`, a GPU, leaving most of its memory to training."""
    if device.type != "cuda":
        return False
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= GPU_SHARE * free


def placed_dataset(dataset: ArrayDataset, device: torch.device) -> ArrayDataset:
    """On a GPU, the dataset on it where it fits (no copy per step), else in pinned memory (each step's
    copy runs asynchronously); elsewhere, as it is."""
    if device.type != "cuda":
        return dataset
    tensors = [t for t in (dataset.x, dataset.y) if t is not None]
    if fits_on_gpu(sum(t.numel() * t.element_size() for t in tensors), device):
        return ArrayDataset(*(None if t is None else t.to(device) for t in (dataset.x, dataset.y)))
    return ArrayDataset(*(None if t is None else t.pin_memory() for t in (dataset.x, dataset.y)))
