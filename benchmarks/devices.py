"""One job on one process and on two (`training.devices: 2`), through the service, timed: the same MNIST
job, a 784-512-512-10 teacher (one epoch of plain PyTorch) into a 784-64-10 student, run alternately on
each so that the machine's other load falls on both; each student measured from its downloaded
student.pt2 on the 10,000 test images. Without GPUs the two processes are gloo ranks sharing the CPU's
cores (torchrun gives each one thread): a check that the result holds, not a speed-up.

    .venv/bin/python -m benchmarks.devices [--data ../shared/datasets/mnist] [--epochs 3] [--rounds 2]
"""

import json
import os
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
from benchmarks.mnist_service import TEACHER, job_request
from tests.factories import train_teacher
from tests.service_client import ServiceClient


def main() -> None:
    parser = argument_parser(__doc__, "devices")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="runs on each number of devices")
    args = parser.parse_args()

    x_train, y_train = load_mnist(args.data, "train")
    x_test, y_test = load_mnist(args.data, "t10k")
    with tempfile.TemporaryDirectory(prefix="distill-bench-") as tmp:
        folder = Path(tmp)
        teacher = train_teacher(TEACHER, x_train, y_train, epochs=1)
        paths = safetensors_job_files(folder, teacher, x_train, y_train, x_test, y_test)
        with service(args.url, args.api_key, folder / "home") as client:
            ids = upload_files(client, paths)
            runs = [
                run(client, ids, devices, args.epochs, x_test, y_test)
                for _round in range(args.rounds)
                for devices in (1, 2)
            ]
    result = {"runs": runs, "epochs": args.epochs, "machine": machine()}
    write_result(args.out, result)
    print(json.dumps(result, indent=2))


def run(client: ServiceClient, ids: dict, devices: int, epochs: int, x_test, y_test) -> dict:
    request = job_request(ids, epochs) | {"export": []}
    request["training"]["devices"] = devices
    load = os.getloadavg()[0]
    with Timer() as job_clock:
        job = client.wait_for_success(client.submit(request)["id"], timeout=3600)
    predictions = exported_predictions(client.artifact(job["id"], "student.pt2"), x_test)
    return {
        "devices": devices,
        "student_test_accuracy_measured_from_pt2": (predictions.numpy() == y_test).mean().item(),
        "student_test_accuracy_reported": job["metrics"]["student"]["accuracy"],
        "job_seconds_submit_to_succeeded": job_clock.seconds,
        "job_seconds_worker": job["finished_at"] - job["started_at"],
        "teacher_cache": job["metrics"]["teacher_cache"]["status"],  # the first job fills it
        "load_average_before": round(load, 2),
    }


if __name__ == "__main__":
    main()
