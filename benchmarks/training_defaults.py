"""Which training defaults train students best: the learning-rate schedule, warm-up, optimizer and weight
decay, side by side on MNIST.

Hinton's 784-800-800-10 MLP student is trained by the engine (`run_distillation`, as the worker runs it),
with the spec's defaults for the rest (10 epochs, batch 128, learning rate 1e-3), in each variant of
`VARIANTS`, twice: alone on the labels (alpha 0, beta 1), and distilled (T 4, alpha 0.9, beta 0.1) from a
teacher with two convolutions (PyTorch's MNIST example) trained here with plain PyTorch and read as a pt2
program. The 10,000 test images are the jobs' validation set, so a job's validation accuracy is its test
accuracy. Each variant and student runs once per seed (the student's initialization and the batches'
order); the table gives the test errors (of 10,000): their mean over the seeds, and each seed's.

    nice -n 10 .venv/bin/python -m benchmarks.training_defaults [--data PATH] [--seeds 2] [--epochs 10]

About 30 minutes on 2 CPU cores. Writes benchmarks/results/training_defaults.json and prints a markdown table.
"""

import statistics
import sys
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

from benchmarks.common import (
    IMAGE_STUDENT,
    Timer,
    argument_parser,
    machine,
    mnist_images,
    trained_two_conv_teacher,
    two_conv_job_files,
    write_result,
)
from engine.pipeline import JobFiles, run_distillation
from engine.plan.specs import EngineJob
from tests.engine.factories import FolderCacheStore, RecordingReporter

STUDENT = IMAGE_STUDENT
STUDENTS = {
    "alone": {"alpha": 0.0, "beta": 1.0},
    "distilled": {"temperature": 4.0, "alpha": 0.9, "beta": 0.1},
}
# What the variants differ in, written out in full so that each stays what its name says whatever the
# defaults are: the engine's defaults before this benchmark chose new ones.
BASE = {"optimizer": "adam", "learning_rate": 1e-3, "weight_decay": 0.0, "lr_schedule": "constant",
        "warmup_epochs": 0.0}  # fmt: skip
VARIANTS = {
    "adam, constant": {},
    "adam, cosine": {"lr_schedule": "cosine"},
    "adam, cosine, warm-up 0.3 epoch": {"lr_schedule": "cosine", "warmup_epochs": 0.3},
    "adam, cosine, warm-up 1 epoch": {"lr_schedule": "cosine", "warmup_epochs": 1.0},
    "adamw, weight decay 0.01, cosine": {"optimizer": "adamw", "weight_decay": 0.01, "lr_schedule": "cosine"},
    "adamw, weight decay 0.05, cosine": {"optimizer": "adamw", "weight_decay": 0.05, "lr_schedule": "cosine"},
    "sgd, momentum 0.9, lr 0.05, cosine": {
        "optimizer": "sgd",
        "learning_rate": 0.05,
        "lr_schedule": "cosine",
    },
}
TEST_IMAGES = 10_000


def main() -> None:
    parser = argument_parser(__doc__, "training_defaults")
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0, 1, …: each variant runs once per seed")
    parser.add_argument("--epochs", type=int, default=10, help="of each student")
    parser.add_argument("--teacher-epochs", type=int, default=4)
    args = parser.parse_args()
    data = mnist_images(args.data)
    with tempfile.TemporaryDirectory(prefix="distill-defaults-") as tmp:
        folder = Path(tmp)
        with Timer() as clock:
            teacher = trained_two_conv_teacher(data[0], data[1], args.teacher_epochs)
        log(f"teacher trained in {clock.seconds} s")
        files = two_conv_job_files(folder, teacher, *data)
        with Timer() as clock:
            errors = measure(files, folder, args.epochs, args.seeds)
    result = {"benchmark": "training_defaults", "machine": machine(), "epochs": args.epochs,
              "seeds": list(range(args.seeds)), "teacher_epochs": args.teacher_epochs,
              "teacher_test_errors": teacher_errors(teacher, data[2], data[3]), "base": BASE,
              "variants": VARIANTS, "test_errors": errors, "seconds": clock.seconds}  # fmt: skip
    write_result(args.out, result)
    print(markdown(result))


def teacher_errors(teacher: nn.Module, x: Tensor, y: Tensor) -> int:
    with torch.no_grad():
        return sum(
            int((teacher(images).argmax(1) != labels).sum())
            for images, labels in zip(x.split(1000), y.split(1000), strict=True)
        )


def measure(files: dict, folder: Path, epochs: int, seeds: int) -> dict:
    """Each variant's test errors, by student, one per seed: every variant for a seed before the next seed.
    The first job computes the teacher's outputs; the store keeps them for the others. Each job's artifacts
    replace the previous job's."""
    store = FolderCacheStore(folder / "cache")
    errors = {variant: {name: [] for name in STUDENTS} for variant in VARIANTS}
    for seed in range(seeds):
        for variant, training in VARIANTS.items():
            for name, distillation in STUDENTS.items():
                job = engine_job(distillation, BASE | training | {"epochs": epochs, "seed": seed})
                with Timer() as clock:
                    count = student_test_errors(job, files, folder / "job", store)
                errors[variant][name].append(count)
                log(f"{variant}, {name}, seed {seed}: {count} test errors, {clock.seconds} s")
    return errors


def engine_job(distillation: dict, training: dict) -> EngineJob:
    return EngineJob.model_validate({
        "teachers": [{"format": "pt2"}],
        "student_architecture": STUDENT,
        "distillation": distillation,
        "training": training,
    })  # fmt: skip


def student_test_errors(job: EngineJob, files: dict, out: Path, store: FolderCacheStore) -> int:
    job_files = JobFiles([files["teacher"]], files["train"], files["validation"])
    metrics = run_distillation(job, job_files, out, RecordingReporter(), teacher_cache=store).metrics
    return round((1 - metrics["student"]["accuracy"]) * TEST_IMAGES)


def markdown(result: dict) -> str:
    rows = [
        f"| {variant} | {cell(by_student['alone'])} | {cell(by_student['distilled'])} |"
        for variant, by_student in result["test_errors"].items()
    ]
    machine = result["machine"]
    return "\n".join([
        "| variant | student alone | distilled |",
        "|---|---:|---:|",
        *rows,
        "",
        f"Test errors of 10,000: the mean over the seeds (each seed's). Students: {result['epochs']} epochs, "
        f"batch 128, lr 1e-3 unless named; teacher: {result['teacher_epochs']} epochs, "
        f"{result['teacher_test_errors']} test errors. {result['seconds']:.0f} s on {machine['cpus']} CPU "
        f"threads ({machine['device']}), torch {machine['torch']}.",
    ])  # fmt: skip


def cell(counts: list[int]) -> str:
    return f"{statistics.mean(counts):.1f} ({', '.join(str(count) for count in counts)})"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
