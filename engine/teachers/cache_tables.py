"""One teacher's outputs over a whole dataset, a row per sample, kept in files: written in one pass, read
back memory-mapped, so that every epoch reads them instead of running the teacher again.

A table's folder holds one raw file per tensor (the logits, each tapped layer) and `manifest.json`, which
names each tensor's file, dtype and shape; the manifest is written last, so a folder without one is torn.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from engine.losses.features import sample_shapes

MANIFEST = "manifest.json"
LOGITS = "logits"
DTYPES = {str(dtype): dtype for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16)}

Teacher = Callable[[Tensor], tuple[Tensor, dict[str, Tensor]]]  # x -> (logits, tapped layers' outputs)


class TornTable(Exception):
    """A table's files do not match its manifest (an interrupted copy, a foreign folder)."""


@dataclass(frozen=True)
class TeacherTable:
    logits: Tensor  # float32 [N, classes]
    layers: dict[str, Tensor]  # by layer path, [N, ...]
    seconds: float  # what computing it took

    def rows(self, index: slice | Tensor, device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        """The rows at `index` (positions, on any device), on `device`."""
        if isinstance(index, Tensor):
            index = index.to(self.logits.device)
        logits = self.logits[index].to(device, non_blocking=True)
        return logits, {
            path: values[index].to(device, non_blocking=True) for path, values in self.layers.items()
        }

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.logits, *self.layers.values()))

    def to(self, device: torch.device) -> "TeacherTable":
        layers = {path: values.to(device) for path, values in self.layers.items()}
        return TeacherTable(self.logits.to(device), layers, self.seconds)


def write_table(
    folder: Path,
    teacher: Teacher,
    x: Tensor,
    batch_size: int,
    device: torch.device,
    layer_dtype: torch.dtype | None,
    tick: Callable[[], None],
) -> dict:
    """Run `teacher` over every sample of `x`, `batch_size` at a time (`tick` before each batch), appending
    each output to its file in `folder`; floating layer outputs are stored as `layer_dtype` (None: as they
    come). Returns the manifest."""
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}  # tensor -> file
    streams, entries = {}, {}
    try:
        for start in range(0, len(x), batch_size):
            tick()
            logits, layers = teacher(x[start : start + batch_size].to(device))
            if not names:
                sample_shapes(layers, "teacher")  # each tapped layer gives one tensor
                names = {LOGITS: "logits.bin"} | {path: f"layer-{k}.bin" for k, path in enumerate(layers)}
                streams = {name: (folder / file).open("wb") for name, file in names.items()}
            outputs = {LOGITS: logits} | {p: stored(v, layer_dtype) for p, v in layers.items()}
            for name, value in outputs.items():
                streams[name].write(value.detach().contiguous().view(-1).view(torch.uint8).cpu().numpy())
                entries[name] = {"dtype": str(value.dtype), "sample_shape": list(value.shape[1:])}
    finally:
        for stream in streams.values():
            stream.close()
    manifest = {
        "samples": len(x),
        "seconds": time.perf_counter() - started,
        "tensors": {name: {"file": names[name], **entry} for name, entry in entries.items()},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def stored(value: Tensor, dtype: torch.dtype | None) -> Tensor:
    return value.to(dtype) if dtype is not None and value.is_floating_point() else value


def read_table(folder: Path) -> TeacherTable:
    """The table in `folder`, memory-mapped (nothing is read until a row is); TornTable if it is not whole."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        tensors = {
            name: mapped(folder, entry, manifest["samples"]) for name, entry in manifest["tensors"].items()
        }
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise TornTable(f"{folder.name}: {error}") from None
    logits = tensors.pop(LOGITS, None)
    if logits is None:
        raise TornTable(f"{folder.name}: no logits")
    return TeacherTable(logits, tensors, float(manifest.get("seconds", 0.0)))


def mapped(folder: Path, entry: dict, samples: int) -> Tensor:
    dtype = DTYPES[entry["dtype"]]
    shape = [samples, *entry["sample_shape"]]
    path = folder / entry["file"]
    count = torch.Size(shape).numel()
    if path.stat().st_size != count * dtype.itemsize:
        raise ValueError(f"{entry['file']} holds {path.stat().st_size} bytes, not {count * dtype.itemsize}")
    return torch.from_file(str(path), shared=False, size=count, dtype=dtype).view(shape)
