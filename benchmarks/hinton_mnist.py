"""Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network", Table 1, reproduced.

1. A 784-1200-1200-10 teacher with dropout, its inputs jittered by up to 2 pixels, is trained here
   with plain PyTorch (a user's own model), built with the service's layer names so that its
   state dict loads, and saved with safetensors (paper: 67 test errors).
2. Through the service's HTTP API only (upload, POST /v1/jobs, poll, download student.pt2), a
   784-800-800-10 student is trained on the 60,000 training images twice: alone, on the unshifted
   images' labels (alpha 0, beta 1; paper: 146 errors), and distilled from the teacher at T = 20
   (paper: 74), its images shifted by up to `--student-shift` pixels (default 2; 0 is the paper's
   transfer set) in every batch, the teacher's soft targets being for those same images (the service's
   `training.augmentation`). The 10,000 test images are the jobs' validation file, so the jobs'
   metrics are test metrics.
3. Each student is measured again from its downloaded student.pt2 with plain torch.export.load, and
   the teacher locally, on the 10,000 test images.

    nice -n 10 .venv/bin/python -m benchmarks.hinton_mnist [--data PATH] [--url URL] [--student-epochs N] ...

Without --url an embedded service (API + one worker) runs in a temp dir for the benchmark's duration.
Writes benchmarks/results/hinton_mnist.json and prints a markdown table.
"""

import argparse
import json
import math
import sys
import tempfile
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from benchmarks.common import (
    Timer,
    argument_parser,
    exported_predictions,
    load_mnist,
    machine,
    safetensors_job_files,
    service,
    upload_files,
    write_result,
)
from engine.models.registry import build_model, count_parameters
from engine.plan.specs import MLPSpec
from tests.factories import save_teacher
from tests.service_client import ServiceClient

PAPER_ERRORS = {"teacher": 67, "student_alone": 146, "distilled_student": 74}
AIM_DISTILLED_OVER_TEACHER = 1.05  # at most 5% more test errors than the teacher
SIDE = 28  # MNIST images are 28x28
IMAGES = [1, SIDE, SIDE]  # as the jobs store them, so that the service can shift them; MLPs flatten them
STUDENT = MLPSpec(input_shape=IMAGES, num_classes=10, hidden_sizes=[800, 800])
JOB_TIMEOUT_SECONDS = 6 * 3600


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, "hinton_mnist")
    teacher = parser.add_argument_group("teacher (trained here, plain PyTorch)")
    teacher.add_argument("--teacher-epochs", type=int, default=70)
    teacher.add_argument("--teacher-batch-size", type=int, default=256)
    teacher.add_argument("--teacher-lr", type=float, default=1e-3, help="Adam, cosine decay to 0")
    teacher.add_argument("--teacher-dropout", type=float, default=0.5, help="after each hidden layer")
    teacher.add_argument(
        "--teacher-max-norm", type=float, default=0.0, help="cap on each hidden unit's weights (0: off)"
    )
    teacher.add_argument("--max-shift", type=int, default=2, help="jitter: random shifts of up to N pixels")
    students = parser.add_argument_group("students (trained by the service)")
    students.add_argument("--student-epochs", type=int, default=30)
    students.add_argument("--batch-size", type=int, default=128)
    students.add_argument("--learning-rate", type=float, default=2e-3)
    students.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam")
    students.add_argument("--lr-schedule", choices=["constant", "cosine"], default="cosine")
    students.add_argument("--temperature", type=float, default=20.0)
    students.add_argument("--alpha", type=float, default=0.9, help="weight of the soft (teacher) loss")
    students.add_argument("--beta", type=float, default=0.1, help="weight of the hard (label) loss")
    students.add_argument("--soft-loss", choices=["kl", "ce", "mse", "dkd", "dist"], default="kl")
    students.add_argument("--logit-standardization", action="store_true", help="z-scored logits at T")
    students.add_argument(
        "--student-shift",
        type=int,
        default=2,
        help="the distilled student's images shifted by up to N pixels, the teacher seeing the same ones "
        "(0: the paper's unshifted transfer set)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--teacher-file",
        type=Path,
        help="the teacher's safetensors: read if it exists, else trained and saved there",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    x_train, y_train = load_mnist(args.data, "train")
    x_test, y_test = load_mnist(args.data, "t10k")
    with tempfile.TemporaryDirectory(prefix="distill-hinton-") as tmp:
        folder = Path(tmp)
        with Timer() as teacher_clock:
            teacher = saved_or_trained_teacher(x_train, y_train, args)
        teacher_result = describe_teacher(teacher, args, x_test, y_test, teacher_clock.seconds)
        paths = safetensors_job_files(folder, teacher, as_images(x_train), y_train, as_images(x_test), y_test)
        with service(args.url, args.api_key, folder / "home") as client:
            with Timer() as upload_clock:
                ids = upload_files(client, paths)
            students = {
                name: run_student(client, job_request(ids, settings, args), as_images(x_test), y_test)
                for name, settings in student_settings(args).items()
            }
    result = summarize(args, teacher_result, students, upload_clock.seconds)
    write_result(args.out, result)
    print(markdown(result))


# --- the teacher ------------------------------------------------------------------------------


def as_images(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, *IMAGES)


def teacher_spec(dropout: float) -> MLPSpec:
    return MLPSpec(input_shape=IMAGES, num_classes=10, hidden_sizes=[1200, 1200], dropout=dropout)


def saved_or_trained_teacher(x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> nn.Module:
    """The teacher of `--teacher-file` when it exists (its seconds are then those of loading it), else one
    trained here, and saved there if asked."""
    if args.teacher_file is not None and args.teacher_file.exists():
        model = build_model(teacher_spec(args.teacher_dropout))
        model.load_state_dict(load_file(args.teacher_file))
        return model.eval()
    model = train_teacher(x, y, args)
    if args.teacher_file is not None:
        save_teacher(args.teacher_file, model)
    return model


def train_teacher(x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> nn.Module:
    """Adam with a cosine decay of the learning rate, on images shifted at random in every batch."""
    torch.manual_seed(args.seed)
    model = build_model(teacher_spec(args.teacher_dropout))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.teacher_lr)
    scheduler = cosine_decay(optimizer, args.teacher_epochs * math.ceil(len(x) / args.teacher_batch_size))
    generator = torch.Generator().manual_seed(args.seed)
    data = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(1, args.teacher_epochs + 1):
        with Timer() as clock:
            loss = teacher_epoch(model, optimizer, scheduler, data, generator, args)
        log(f"teacher epoch {epoch}/{args.teacher_epochs}: mean loss {loss:.4f}, {clock.seconds} s")
    return model.eval()


def cosine_decay(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )


def teacher_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: tuple[Tensor, Tensor],
    generator: torch.Generator,
    args: argparse.Namespace,
) -> float:
    """One pass over the shuffled training set; the mean training loss."""
    xs, ys = data
    model.train()
    losses = []
    for batch in torch.randperm(len(xs), generator=generator).split(args.teacher_batch_size):
        images = jitter(xs[batch], args.max_shift, generator)
        losses.append(teacher_step(model, optimizer, images, ys[batch], args.teacher_max_norm))
        scheduler.step()
    return sum(losses) / len(losses)


def jitter(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Each flattened 28x28 image moved by its own random (dy, dx) in [-max_shift, max_shift],
    the pixels shifted in from outside being 0."""
    count, reach = len(images), 2 * max_shift + 1
    padded = F.pad(images.view(count, SIDE, SIDE), (max_shift,) * 4)
    top = torch.randint(0, reach, (count, 1), generator=generator) + torch.arange(SIDE)
    left = torch.randint(0, reach, (count, 1), generator=generator) + torch.arange(SIDE)
    rows, columns = top[:, :, None], left[:, None, :]
    return padded[torch.arange(count)[:, None, None], rows, columns].reshape(count, SIDE * SIDE)


def teacher_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, max_norm: float
) -> float:
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if max_norm > 0:
        cap_incoming_norms(model, max_norm)
    return loss.item()


@torch.no_grad()
def cap_incoming_norms(model: nn.Module, max_norm: float) -> None:
    """The dropout paper's weight constraint: each hidden unit's incoming weight vector has an L2
    norm of at most `max_norm` (rescaled when it grows past it)."""
    for block in model.hidden:
        weight = block.linear.weight
        weight.copy_(torch.renorm(weight, p=2, dim=0, maxnorm=max_norm))


def describe_teacher(model: nn.Module, args, x_test: np.ndarray, y_test: np.ndarray, seconds: float) -> dict:
    with torch.no_grad():
        predictions = model(torch.from_numpy(x_test)).argmax(1).numpy()
    return {
        "architecture": teacher_spec(args.teacher_dropout).model_dump(),
        "parameters": count_parameters(model),
        "test_errors": int((predictions != y_test).sum()),
        "training": {
            "epochs": args.teacher_epochs,
            "batch_size": args.teacher_batch_size,
            "optimizer": "adam",
            "learning_rate": args.teacher_lr,
            "lr_schedule": "cosine",
            "max_norm": args.teacher_max_norm,
            "jitter_pixels": args.max_shift,
            "device": "cpu",
        },
        "seconds": seconds,
    }


# --- the students, through the service --------------------------------------------------------


def student_settings(args: argparse.Namespace) -> dict[str, dict]:
    """The same student trained twice: on the labels only, as the paper's, and on the teacher's soft
    targets too, its inputs shifted by up to `--student-shift` pixels. Alone, the teacher is still named
    (the service needs one) but serves only the agreement metric."""
    return {
        "student_alone": {"distillation": {"temperature": args.temperature, "alpha": 0.0, "beta": 1.0}},
        "distilled_student": {
            "distillation": {
                "temperature": args.temperature,
                "alpha": args.alpha,
                "beta": args.beta,
                "soft_loss": args.soft_loss,
                "logit_standardization": args.logit_standardization,
            },
            "augmentation": {"shift": args.student_shift},
        },  # fmt: skip
    }


def job_request(ids: dict[str, str], settings: dict, args: argparse.Namespace) -> dict:
    distillation = settings["distillation"]
    return {
        "name": f"hinton-mnist alpha={distillation['alpha']} beta={distillation['beta']}",
        "teacher": {
            "file_id": ids["teacher"],
            "architecture": teacher_spec(args.teacher_dropout).model_dump(),
        },
        "student": {"architecture": STUDENT.model_dump()},
        "dataset": {"train_file_id": ids["train"], "validation_file_id": ids["validation"]},
        "distillation": distillation,
        "training": {
            "epochs": args.student_epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "optimizer": args.optimizer,
            "lr_schedule": args.lr_schedule,
            "augmentation": settings.get("augmentation", {}),
            "seed": args.seed,
        },
    }


def run_student(client: ServiceClient, request: dict, x_test: np.ndarray, y_test: np.ndarray) -> dict:
    """Submit the job, wait for it, and measure the student it produced."""
    log(f"job submitted: {request['name']}, {request['training']['epochs']} epochs")
    with Timer() as clock:
        job = client.wait_for_success(client.submit(request)["id"], timeout=JOB_TIMEOUT_SECONDS)
    predictions = exported_predictions(client.artifact(job["id"], "student.pt2"), x_test).numpy()
    worker_summary = json.loads(client.artifact(job["id"], "metrics.json"))
    metrics, count = job["metrics"], len(y_test)
    student_accuracy, teacher_accuracy = metrics["student"]["accuracy"], metrics["teacher"]["accuracy"]
    result = {
        "job_id": job["id"],
        "request": {key: job["request"][key] for key in ("distillation", "training")},
        "parameters": metrics["student"]["parameters"],
        "test_errors": int((predictions != y_test).sum()),
        "test_errors_reported_by_the_job": errors_from_accuracy(student_accuracy, count),
        "teacher_test_errors_reported_by_the_job": errors_from_accuracy(teacher_accuracy, count),
        "agreement_with_the_teacher": metrics["agreement"],
        "test_errors_by_epoch": [
            errors_from_accuracy(accuracy, count)
            for accuracy in client.metric_series(job["id"], "validation_accuracy")
        ],
        "seconds_submit_to_succeeded": clock.seconds,
        "seconds_in_the_worker": round(worker_summary["seconds"], 1),
        "worker_device": worker_summary["device"],
    }
    log(f"job {job['id']} succeeded in {clock.seconds} s: {result['test_errors']} test errors")
    return result


def errors_from_accuracy(accuracy: float, count: int) -> int:
    return round((1 - accuracy) * count)


# --- the report -------------------------------------------------------------------------------


def summarize(args: argparse.Namespace, teacher: dict, students: dict, upload_seconds: float) -> dict:
    errors = {"teacher": teacher["test_errors"]} | {
        name: student["test_errors"] for name, student in students.items()
    }
    seconds = {"teacher_training": teacher["seconds"], "upload": upload_seconds} | {
        f"{name}_job": student["seconds_submit_to_succeeded"] for name, student in students.items()
    }
    return {
        "test_errors": errors,
        "paper_test_errors": PAPER_ERRORS,
        "ratios": ratios(errors),
        "teacher": teacher,
        **students,
        "seconds": seconds | {"total": round(sum(seconds.values()), 1)},
        "settings": json_settings(args),
        "command": command_line(),
        "machine": machine(),
    }


def json_settings(args: argparse.Namespace) -> dict:
    """The options as JSON values, without the API key."""
    settings = {name: str(value) if isinstance(value, Path) else value for name, value in vars(args).items()}
    return {name: value for name, value in settings.items() if name != "api_key"}


def command_line() -> str:
    """This run's command, with an API key's value left out."""
    words = [word.split("=")[0] + "=…" if word.startswith("--api-key=") else word for word in sys.argv[1:]]
    words = ["…" if previous == "--api-key" else word for previous, word in pairwise(["", *words])]
    return " ".join(["nice -n 10 .venv/bin/python -m benchmarks.hinton_mnist", *words])


def ratios(errors: dict[str, int]) -> dict:
    distilled_over_teacher = errors["distilled_student"] / errors["teacher"]
    return {
        "distilled_over_teacher": round(distilled_over_teacher, 3),
        "student_alone_over_distilled": round(errors["student_alone"] / errors["distilled_student"], 3),
        "paper_distilled_over_teacher": round(PAPER_ERRORS["distilled_student"] / PAPER_ERRORS["teacher"], 3),
        "paper_student_alone_over_distilled": round(
            PAPER_ERRORS["student_alone"] / PAPER_ERRORS["distilled_student"], 3
        ),
        "aim_distilled_over_teacher_at_most": AIM_DISTILLED_OVER_TEACHER,
        "aim_met": distilled_over_teacher <= AIM_DISTILLED_OVER_TEACHER,
    }


def markdown(result: dict) -> str:
    settings, seconds = result["settings"], result["seconds"]
    lines = [
        "| | test errors (of 10,000) | paper | reported by the job | parameters | wall time |",
        "|---|---:|---:|---:|---:|---:|",
        teacher_row(result),
        student_row(result, "student_alone", "student 784-800-800-10 alone (α 0, β 1)"),
        student_row(
            result,
            "distilled_student",
            f"student 784-800-800-10 distilled (T {settings['temperature']:g}, "
            f"α {settings['alpha']:g}, β {settings['beta']:g}{shifted(settings['student_shift'])})",
        ),
        "",
        ratios_sentence(result["ratios"]),
        f"Students: {settings['student_epochs']} epochs each, batch {settings['batch_size']}, "
        f"{settings['optimizer']}, lr {settings['learning_rate']:g} {settings['lr_schedule']}. "
        f"Total {seconds['total']:.0f} s (upload {seconds['upload']:.0f} s).",
        machine_sentence(result["machine"], result["distilled_student"]["worker_device"]),
    ]
    return "\n".join(lines)


def shifted(pixels: int) -> str:
    return f", images shifted ±{pixels} px" if pixels else ""


def table_row(*cells) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def teacher_row(result: dict) -> str:
    settings, teacher = result["settings"], result["teacher"]
    label = (
        f"teacher 784-1200-1200-10, dropout {settings['teacher_dropout']:g}, ±{settings['max_shift']} px "
        f"jitter ({settings['teacher_epochs']} epochs, plain PyTorch)"
    )
    reported = result["distilled_student"]["teacher_test_errors_reported_by_the_job"]
    return table_row(
        label,
        teacher["test_errors"],
        PAPER_ERRORS["teacher"],
        reported,
        f"{teacher['parameters']:,}",
        f"{teacher['seconds']:.0f} s",
    )


def student_row(result: dict, name: str, label: str) -> str:
    student = result[name]
    return table_row(
        label,
        student["test_errors"],
        PAPER_ERRORS[name],
        student["test_errors_reported_by_the_job"],
        f"{student['parameters']:,}",
        f"{student['seconds_submit_to_succeeded']:.0f} s",
    )


def ratios_sentence(ratios: dict) -> str:
    verdict = "met" if ratios["aim_met"] else "not met"
    return (
        f"Distilled / teacher errors: {ratios['distilled_over_teacher']:.2f} "
        f"(paper {ratios['paper_distilled_over_teacher']:.2f}; "
        f"aim ≤ {AIM_DISTILLED_OVER_TEACHER}: {verdict}). "
        f"Student alone / distilled: {ratios['student_alone_over_distilled']:.2f} "
        f"(paper {ratios['paper_student_alone_over_distilled']:.2f})."
    )


def machine_sentence(machine: dict, worker_device: str) -> str:
    return (
        f"Machine: {machine['platform']}, {machine['cpus']} CPU threads, torch {machine['torch']}; "
        f"teacher trained on cpu, students on {worker_device}."
    )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
