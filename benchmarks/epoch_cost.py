"""What a distillation epoch costs: the service's training loop against plain PyTorch, side by side.

MNIST (60,000 training images [1, 28, 28]; the 10,000 test images as the validation set); a teacher with two
convolutions (PyTorch's MNIST example: conv 32, conv 64, max-pool, fc 128, fc 10), trained one epoch here
and uploaded as a pt2 program; Hinton's 784-800-800-10 MLP student; batch 128, Adam, learning rate 1e-3.
Each loop's epoch is its training steps plus a pass over the validation set, as the service's is:

- plain: the student alone on the labels, a hand-written loop (the floor);
- naive KD: the same loop running the teacher on every batch, loss alpha·KL·T² + beta·CE;
- service: the engine's loop as the worker runs it (`run_distillation`), `teacher_cache` auto and off;
  the student alone and the service take turns over `--rounds` rounds, as the machine's load drifts;
- `auto` T: a whole job with `temperature: auto` (five one-epoch trials, then the run) against the run;
- over HTTP: the same job sent to the embedded service (API and worker processes) twice: the second
  reads the teacher's outputs its first kept.

    .venv/bin/python -m benchmarks.epoch_cost [--data ../shared/datasets/mnist] [--epochs 3] [--rounds 3]
"""

import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    IMAGE_STUDENT,
    argument_parser,
    machine,
    mnist_images,
    service,
    trained_two_conv_teacher,
    two_conv_job_files,
    write_result,
)
from engine.models.registry import build_model
from engine.pipeline import JobFiles, run_distillation
from engine.plan.specs import EngineJob
from tests.engine.factories import FolderCacheStore, RecordingReporter

STUDENT = IMAGE_STUDENT
BATCH, LEARNING_RATE, TEMPERATURE, ALPHA, BETA = 128, 1e-3, 4.0, 0.9, 0.1


class TimingReporter(RecordingReporter):
    """Records when training starts (the first step) and when each epoch ends (its metrics)."""

    def progress(self, epoch, epochs, step, total_steps):
        if not self.progress_calls:
            self.started = time.perf_counter()
        super().progress(epoch, epochs, step, total_steps)

    def metrics(self, epoch, step, values):
        super().metrics(epoch, step, values)
        self.ends = getattr(self, "ends", []) + [time.perf_counter()]

    def epoch_seconds(self) -> list[float]:
        marks = [self.started, *self.ends]
        return [later - earlier for earlier, later in zip(marks, marks[1:], strict=False)]


def plain_loop(x, y, x_val, y_val, epochs: int, teacher: nn.Module | None = None) -> list[float]:
    """Seconds per epoch of a hand-written loop: the student alone, or with `teacher` run on every batch."""
    torch.manual_seed(0)
    student = build_model(STUDENT)
    optimizer = torch.optim.Adam(student.parameters(), lr=LEARNING_RATE)
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        student.train()
        for index in torch.randperm(len(x)).split(BATCH):
            logits = student(x[index])
            loss = F.cross_entropy(logits, y[index])
            if teacher is not None:
                with torch.no_grad():
                    soft = F.log_softmax(teacher(x[index]) / TEMPERATURE, dim=1)
                student_soft = F.log_softmax(logits / TEMPERATURE, dim=1)
                kl = F.kl_div(student_soft, soft, reduction="batchmean", log_target=True)
                loss = ALPHA * kl * TEMPERATURE**2 + BETA * loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        student.eval()
        with torch.no_grad():
            predictions = torch.cat([student(batch).argmax(1) for batch in x_val.split(BATCH)])
        (predictions == y_val).float().mean().item()
        seconds.append(time.perf_counter() - started)
    return seconds


def engine_job(epochs: int, **distillation) -> EngineJob:
    return EngineJob.model_validate({
        "teachers": [{"format": "pt2"}],
        "student_architecture": STUDENT,
        "distillation": {"temperature": TEMPERATURE, "alpha": ALPHA, "beta": BETA, **distillation},
        "training": {"epochs": epochs, "batch_size": BATCH, "learning_rate": LEARNING_RATE, "device": "cpu"},
        "export": [],
    })  # fmt: skip


def engine_run(
    job: EngineJob, files: dict, out: Path, store: FolderCacheStore
) -> tuple[TimingReporter, dict]:
    reporter = TimingReporter()
    job_files = JobFiles([files["teacher"]], files["train"], files["validation"])
    metrics = run_distillation(job, job_files, out, reporter, teacher_cache=store).metrics
    return reporter, metrics


def measure(files: dict, data: tuple, teacher: nn.Module, epochs: int, rounds: int, folder: Path) -> dict:
    """Seconds per epoch of each loop: the student alone and the service in `rounds` rounds, taking turns
    to go first (the machine's load drifts); the naive loops, four times slower, once. The service keeps
    its teacher's outputs in a store: its first run computes them, the later runs and `auto` read them."""
    store, figures = FolderCacheStore(folder / "cache"), {"plain_student": [], "service": []}
    for number in range(rounds):
        turns = ["plain_student", "service"] if number % 2 == 0 else ["service", "plain_student"]
        for name in turns:
            if name == "plain_student":
                figures[name] += plain_loop(*data, epochs)
                continue
            reporter, metrics = engine_run(engine_job(epochs), files, folder / f"run{number}", store)
            figures[name] += reporter.epoch_seconds()
            figures.setdefault("teacher_cache", metrics["teacher_cache"])  # the first run's: a miss
    uncached, _ = engine_run(engine_job(epochs, teacher_cache="off"), files, folder / "uncached", store)
    searched, _ = engine_run(engine_job(epochs, temperature="auto"), files, folder / "auto", store)
    return {
        **{f"{name}_epoch_seconds": figures[name] for name in ("plain_student", "service")},
        "naive_kd_epoch_seconds": plain_loop(*data, epochs, teacher),
        "service_uncached_epoch_seconds": uncached.epoch_seconds(),
        "teacher_cache": figures["teacher_cache"],
        "auto_total_seconds": sum(searched.epoch_seconds()),
        "one_run_total_seconds": statistics.median(figures["service"]) * epochs,
    }


def over_http(url, api_key, files: dict, epochs: int, home: Path) -> dict:
    """The job sent twice to the service; each one's seconds in the worker and its teacher cache."""
    runs = []
    with service(url, api_key, home) as client:
        ids = {name: client.upload(path, "teacher" if name == "teacher" else "dataset")["id"]
               for name, path in files.items()}  # fmt: skip
        request = {
            "teacher": {"file_id": ids["teacher"], "format": "pt2"},
            "student": {"architecture": STUDENT.model_dump()},
            "dataset": {"train_file_id": ids["train"], "validation_file_id": ids["validation"]},
            "distillation": {"temperature": TEMPERATURE, "alpha": ALPHA, "beta": BETA},
            "training": {"epochs": epochs, "batch_size": BATCH, "learning_rate": LEARNING_RATE},
            "export": [],
        }
        for _ in range(2):
            job = client.wait_for_success(client.submit(request)["id"], timeout=3600)
            cache = job["metrics"]["teacher_cache"]
            runs.append({"worker_seconds": job["finished_at"] - job["started_at"], "teacher_cache": cache})
    return {"first": runs[0], "second": runs[1]}


def main() -> None:
    parser = argument_parser(__doc__, "epoch_cost")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="of the student alone and of the service")
    args = parser.parse_args()
    data = mnist_images(args.data)
    with tempfile.TemporaryDirectory(prefix="distill-bench-") as tmp:
        folder = Path(tmp)
        teacher = trained_two_conv_teacher(data[0], data[1])
        files = two_conv_job_files(folder, teacher, *data)
        figures = measure(files, data, teacher, args.epochs, args.rounds, folder)
        http = over_http(args.url, args.api_key, files, args.epochs, folder / "home")
    result = {"benchmark": "epoch_cost", "machine": machine(), "epochs": args.epochs, "rounds": args.rounds,
              **figures, "over_http": http}  # fmt: skip
    result["ratios"] = ratios(result)
    write_result(args.out, result)
    report(result)


def ratios(result: dict) -> dict:
    """Each loop's median epoch against the others'; the cache's one pass spread over the run's epochs."""
    median = {name: statistics.median(result[f"{name}_epoch_seconds"])
              for name in ("plain_student", "naive_kd", "service", "service_uncached")}  # fmt: skip
    amortized = median["service"] + result["teacher_cache"]["seconds"] / result["epochs"]
    http = result["over_http"]
    return {
        "service_over_plain_student": round(median["service"] / median["plain_student"], 3),
        "service_with_the_cache_pass_over_plain_student": round(amortized / median["plain_student"], 3),
        "naive_kd_over_service": round(median["naive_kd"] / median["service"], 3),
        "service_uncached_over_naive_kd": round(median["service_uncached"] / median["naive_kd"], 3),
        "auto_over_one_run": round(result["auto_total_seconds"] / result["one_run_total_seconds"], 3),
        "http_second_over_first": round(
            http["second"]["worker_seconds"] / http["first"]["worker_seconds"], 3
        ),
    }


def report(result: dict) -> None:
    for name in ("plain_student", "naive_kd", "service", "service_uncached"):
        seconds = result[f"{name}_epoch_seconds"]
        print(f"{name:<18} epoch seconds {', '.join(f'{s:.2f}' for s in seconds)}")
    print(f"teacher cache: {result['teacher_cache']}")
    print(f"over HTTP: {result['over_http']}")
    for name, value in result["ratios"].items():
        print(f"{name:<48} {value}x")


if __name__ == "__main__":
    main()
