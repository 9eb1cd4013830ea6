"""What checkpoints cost and what they save, on the engine: MNIST into Hinton's 784-800-800-10 student.

Runs the same distillation job three ways with plain `run_distillation` (no service, so the figures
are the engine's own): without checkpoints; with one at every step (the cost of one save, and its
size); and killed at `--kill-at` of its steps, then resumed from a checkpoint saved every
`--interval` seconds. The kill is simulated in-process (the attempt stops dead at that step, saving
nothing more); `tests/e2e/test_worker_loss.py` does it with SIGKILL. The resumed student must equal the
uninterrupted one bit for bit.

    .venv/bin/python -m benchmarks.checkpoint_cost [--data ../shared/datasets/mnist] [--epochs 2]
"""

import hashlib
import tempfile
import time
from pathlib import Path

from benchmarks.common import MNIST_TEACHER, argument_parser, machine, mnist_teacher_files, write_result
from engine.pipeline import JobFiles, run_distillation
from engine.plan.specs import EngineJob, MLPSpec
from engine.train.checkpoints import Checkpoints
from tests.engine.factories import FolderStore, KilledAt, RecordingReporter, WorkerKilled

STUDENT = MLPSpec(input_shape=[784], num_classes=10, hidden_sizes=[800, 800])


def attempt(
    job, files, folder: Path, reporter: RecordingReporter, checkpoints: Checkpoints
) -> tuple[float, str | None]:
    """Seconds of the attempt and the sha256 of its student (None if it was killed)."""
    out = Path(tempfile.mkdtemp(dir=folder))
    started = time.perf_counter()
    try:
        job_files = JobFiles([files["teacher"]], files["train"], files["validation"])
        result = run_distillation(job, job_files, out, reporter, checkpoints)
    except WorkerKilled:
        return time.perf_counter() - started, None
    digest = hashlib.sha256(result.artifacts["student.safetensors"].read_bytes()).hexdigest()
    return time.perf_counter() - started, digest


def measure(job: EngineJob, files: dict, folder: Path, kill_fraction: float, interval: float) -> dict:
    plain = RecordingReporter()
    plain_seconds, plain_student = attempt(job, files, folder, plain, Checkpoints())
    steps = len(plain.progress_calls)
    every_step = FolderStore(folder / "every-step")
    every_seconds, every_student = attempt(
        job, files, folder, RecordingReporter(), Checkpoints(every_step, 0.0)
    )
    kill_at, store, resumed = int(steps * kill_fraction), FolderStore(folder / "resumed"), RecordingReporter()
    killed_seconds, _ = attempt(job, files, folder, KilledAt(kill_at=kill_at), Checkpoints(store, interval))
    resumed_seconds, resumed_student = attempt(job, files, folder, resumed, Checkpoints(store, interval))
    save_ms = (every_seconds - plain_seconds) / steps * 1000
    return {
        "steps": steps,
        "uninterrupted_seconds": round(plain_seconds, 1),
        "checkpoint_every_step_seconds": round(every_seconds, 1),
        "step_ms": round(plain_seconds / steps * 1000, 1),
        "save_ms": round(save_ms, 1),
        "checkpoint_megabytes": round(every_step.largest / 1e6, 1),
        "overhead_at_300_s": f"{save_ms / 1000 / 300:.4%}",
        "checkpoint_interval_seconds": interval,
        "killed_at_step": kill_at,
        "resumed_from_step": resumed.rewinds[0],
        "steps_redone": kill_at - 1 - resumed.rewinds[0],
        "killed_plus_resumed_seconds": round(killed_seconds + resumed_seconds, 1),
        "killed_plus_restart_from_scratch_seconds": round(killed_seconds + plain_seconds, 1),
        "same_student_every_way": plain_student == every_student == resumed_student,
    }


def main() -> None:
    parser = argument_parser(__doc__, "checkpoint_cost")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--kill-at", type=float, default=0.6, help="fraction of the steps")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between checkpoints")
    args = parser.parse_args()
    job = EngineJob.model_validate({
        "teachers": [{"format": "safetensors", "architecture": MNIST_TEACHER}],
        "student_architecture": STUDENT,
        "distillation": {"temperature": 20.0, "alpha": 0.9, "beta": 0.1},
        "training": {"epochs": args.epochs, "batch_size": 128, "lr_schedule": "cosine", "device": "cpu"},
    })  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="distill-bench-") as tmp:
        folder = Path(tmp)
        files = mnist_teacher_files(folder, args.data)
        figures = measure(job, files, folder, args.kill_at, args.interval)
    result = {"job": f"MNIST, 784-1200-1200-10 teacher into 784-800-800-10 student, {args.epochs} epochs"}
    result |= figures | {"machine": machine()}
    for name, value in result.items():
        print(f"{name}: {value}")
    write_result(args.out, result)


if __name__ == "__main__":
    main()
