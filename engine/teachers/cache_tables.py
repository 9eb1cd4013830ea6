"""One teacher's outputs over a whole dataset, a row per sample, kept in files: written in one pass, read
back memory-mapped, so that every epoch reads them instead of running the teacher again.

A table is named tensors: a classifier teacher's logits and tapped layers (`cache`), a causal language
model's top-k token ids and log-probabilities at each position of a block (`lm_cache`). Its folder holds one
raw file per tensor and `manifest.json`, which names each tensor's file, dtype and shape; the manifest is
written last, so a folder without one is torn.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

MANIFEST = "manifest.json"
DTYPES = {
    str(dtype): dtype
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64)
}

Outputs = Callable[[slice], dict[str, Tensor]]  # the rows of some samples -> each tensor's rows, as stored


class TornTable(Exception):
    """A table's files do not match its manifest (an interrupted copy, a foreign folder)."""


@dataclass(frozen=True)
class TeacherTable:
    tensors: dict[str, Tensor]  # by name, a row per sample: [N, ...]
    seconds: float  # what computing it took

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def rows(self, index: slice | Tensor, device: torch.device) -> dict[str, Tensor]:
        """Each tensor's rows at `index` (positions, on any device), on `device`."""
        rows = {}
        for name, values in self.tensors.items():
            at = index.to(values.device) if isinstance(index, Tensor) else index
            rows[name] = values[at].to(device, non_blocking=True)
        return rows

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def to(self, device: torch.device) -> "TeacherTable":
        return TeacherTable({name: values.to(device) for name, values in self.tensors.items()}, self.seconds)


def write_table(
    folder: Path, outputs: Outputs, samples: int, batch_size: int, tick: Callable[[], None]
) -> dict:
    """Compute the outputs of every one of `samples`, `batch_size` at a time (`tick` before each batch),
    appending each tensor to its file in `folder`. Returns the manifest."""
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}  # tensor -> file
    streams, entries = {}, {}
    try:
        for start in range(0, samples, batch_size):
            tick()
            values = outputs(slice(start, start + batch_size))
            if not files:
                files = {name: file_name(name, index) for index, name in enumerate(values)}
                streams = {name: (folder / file).open("wb") for name, file in files.items()}
            for name, value in values.items():
                streams[name].write(value.detach().contiguous().view(-1).view(torch.uint8).cpu().numpy())
                entries[name] = {"dtype": str(value.dtype), "sample_shape": list(value.shape[1:])}
    finally:
        for stream in streams.values():
            stream.close()
    manifest = {
        "samples": samples,
        "seconds": time.perf_counter() - started,
        "tensors": {name: {"file": files[name], **entry} for name, entry in entries.items()},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def file_name(name: str, index: int) -> str:
    """`logits.bin` for a tensor named like a variable; a layer's path (`features.3`) by its number."""
    return f"{name}.bin" if name.isidentifier() else f"tensor-{index}.bin"


def read_table(folder: Path, names: tuple[str, ...]) -> TeacherTable:
    """The table in `folder`, memory-mapped (nothing is read until a row is); TornTable if it is not whole or
    lacks one of the tensors `names`."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        tensors = {
            name: mapped(folder, entry, manifest["samples"]) for name, entry in manifest["tensors"].items()
        }
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise TornTable(f"{folder.name}: {error}") from None
    missing = [name for name in names if name not in tensors]
    if missing:
        raise TornTable(f"{folder.name}: no {', '.join(missing)}")
    return TeacherTable(tensors, float(manifest.get("seconds", 0.0)))


def mapped(folder: Path, entry: dict, samples: int) -> Tensor:
    dtype = DTYPES[entry["dtype"]]
    shape = [samples, *entry["sample_shape"]]
    path = folder / entry["file"]
    count = torch.Size(shape).numel()
    if path.stat().st_size != count * dtype.itemsize:
        raise ValueError(f"{entry['file']} holds {path.stat().st_size} bytes, not {count * dtype.itemsize}")
    return torch.from_file(str(path), shared=False, size=count, dtype=dtype).view(shape)
