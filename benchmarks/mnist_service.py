"""MNIST through the service, end to end, timed: what a user sees on this machine.

Trains a 784-512-512-10 teacher with plain PyTorch, starts the embedded service (API + worker
processes) unless --url names a running one, uploads teacher and data, distils a 784-64-10 student
over HTTP, downloads student.pt2 and measures it on the 10,000 test images outside the service.

    .venv/bin/python -m benchmarks.mnist_service [--data ../shared/datasets/mnist] [--epochs 5] [--url URL]
"""

import json
import tempfile
from pathlib import Path

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
from engine.plan.specs import MLPSpec
from tests.factories import train_teacher
from tests.service_client import ServiceClient

TEACHER = MLPSpec(input_shape=[784], num_classes=10, hidden_sizes=[512, 512])
STUDENT = MLPSpec(input_shape=[784], num_classes=10, hidden_sizes=[64])


def main() -> None:
    parser = argument_parser(__doc__, "mnist_service")
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    x_train, y_train = load_mnist(args.data, "train")
    x_test, y_test = load_mnist(args.data, "t10k")
    with tempfile.TemporaryDirectory(prefix="distill-bench-") as tmp:
        folder = Path(tmp)
        with Timer() as teacher_clock:
            teacher = train_teacher(TEACHER, x_train, y_train, epochs=args.teacher_epochs)
        paths = safetensors_job_files(folder, teacher, x_train, y_train, x_test, y_test)
        with service(args.url, args.api_key, folder / "home") as client:
            result = distill(client, paths, args.epochs, x_test, y_test)
    result.update(teacher_training_seconds=teacher_clock.seconds, machine=machine())
    write_result(args.out, result)
    print(json.dumps(result, indent=2))


def distill(client: ServiceClient, paths: dict, epochs: int, x_test, y_test) -> dict:
    with Timer() as upload_clock:
        ids = upload_files(client, paths)
    with Timer() as job_clock:
        job = client.wait_for_success(client.submit(job_request(ids, epochs))["id"], timeout=3600)

    predictions = exported_predictions(client.artifact(job["id"], "student.pt2"), x_test)
    measured = (predictions.numpy() == y_test).mean().item()
    metrics = job["metrics"]
    return {
        "teacher_test_accuracy": metrics["teacher"]["accuracy"],
        "student_test_accuracy_reported": metrics["student"]["accuracy"],
        "student_test_accuracy_measured_from_pt2": measured,
        "teacher_parameters": metrics["teacher"]["parameters"],
        "student_parameters": metrics["student"]["parameters"],
        "compression": round(metrics["compression"], 2),
        "accuracy_retention": round(metrics["accuracy_retention"], 4),
        "agreement": metrics["agreement"],
        "student_epochs": epochs,
        "upload_seconds": upload_clock.seconds,
        "job_seconds_submit_to_succeeded": job_clock.seconds,
        "job_seconds_worker": job["finished_at"] - job["started_at"],
    }


def job_request(ids: dict[str, str], epochs: int) -> dict:
    """The job: `TEACHER` into `STUDENT` at T 4, the test set as validation."""
    return {
        "teacher": {"file_id": ids["teacher"], "architecture": TEACHER.model_dump()},
        "student": {"architecture": STUDENT.model_dump()},
        "dataset": {"train_file_id": ids["train"], "validation_file_id": ids["validation"]},
        "distillation": {"temperature": 4.0, "alpha": 0.9, "beta": 0.1},
        "training": {"epochs": epochs, "batch_size": 128, "learning_rate": 0.001},
    }


if __name__ == "__main__":
    main()
