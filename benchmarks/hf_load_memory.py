"""The peak memory of loading an `hf` teacher as the worker does, in a process of its own: the archive
unpacked (`worker.teacher_folders.unpacked_teacher`) and the folder loaded (`engine.teachers.loading
.load_teacher`) with the teacher spec the job resolved. The service reports no memory figure, so this is
the worker's code run alone. Linux only: the kernel's high-water mark of this process's resident memory
(VmHWM) is reset to the current RSS just before (`/proc/self/clear_refs`), so the peak is the loading's.

transformers maps the safetensors file into memory and leaves float32 weights there: a weight's pages become
resident when it is first read, which the loading alone does not do for most of them. So the peak is taken
twice: once loaded, and again once every weight has been read (summed in place), as the teacher's first
pass over the data reads them; the second is the figure the goal is about.

    .venv/bin/python -m benchmarks.hf_load_memory ARCHIVE 'ARCHITECTURE_JSON'

Prints one JSON line (MiB): the RSS before, the peak growth once loaded and once every weight was read,
the folder's safetensors, and their ratio.
"""

import json
import sys
from pathlib import Path

import torch

from core.config import Settings
from engine.plan.specs import HFSpec
from engine.teachers.loading import load_teacher
from worker.teacher_folders import unpacked_teacher


def status_mib(field: str) -> float:
    """A `VmRSS`/`VmHWM` line of /proc/self/status (kB), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def main() -> None:
    archive, architecture = Path(sys.argv[1]), HFSpec.model_validate_json(sys.argv[2])
    before = status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    with unpacked_teacher(archive, Settings(), "teacher") as folder:
        teacher = load_teacher(folder, "hf", architecture)
        loaded = status_mib("VmHWM") - before
        with torch.no_grad():
            for tensor in (*teacher.parameters(), *teacher.buffers()):
                tensor.sum()
        read = status_mib("VmHWM") - before
        weights = sum(path.stat().st_size for path in folder.glob("*.safetensors")) / 1024**2
    print(json.dumps({
        "rss_before_mib": round(before, 1), "loaded_peak_growth_mib": round(loaded, 1),
        "read_peak_growth_mib": round(read, 1), "weights_mib": round(weights, 1),
        "growth_over_weights": round(read / weights, 2),
        "parameters": sum(p.numel() for p in teacher.parameters()),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
