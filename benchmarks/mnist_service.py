"""MNIST through the service, end to end, timed: what a user sees on this machine.

Trains a 784-512-512-10 teacher with plain PyTorch, starts the embedded service (API + worker
processes), uploads teacher and data, distils a 784-64-10 student over HTTP, downloads student.pt2
and measures it on the 10,000 test images outside the service.

    .venv/bin/python -m benchmarks.mnist_service [--data ../shared/datasets/mnist] [--epochs 5]
"""

import argparse
import gzip
import io
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tests.factories import save_npz, save_teacher, train_teacher
from tests.stack import ServiceStack
from worker.engine.specs import MLPSpec

ROOT = Path(__file__).resolve().parent.parent
TEACHER = MLPSpec(input_shape=[784], num_classes=10, hidden_sizes=[512, 512])


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist(folder: Path, split: str):
    x = read_idx(folder / f"{split}-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255.0
    y = read_idx(folder / f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "mnist")
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mnist_service.json")
    args = parser.parse_args()

    x_train, y_train = load_mnist(args.data, "train")
    x_test, y_test = load_mnist(args.data, "t10k")
    with tempfile.TemporaryDirectory(prefix="distill-bench-") as tmp:
        folder = Path(tmp)
        clock = time.perf_counter()
        teacher = train_teacher(TEACHER, x_train, y_train, epochs=args.teacher_epochs)
        teacher_seconds = time.perf_counter() - clock
        paths = {
            "teacher": save_teacher(folder / "teacher.safetensors", teacher),
            "train": save_npz(folder / "train.npz", x_train, y_train),
            "test": save_npz(folder / "test.npz", x_test, y_test),
        }
        with ServiceStack(folder / "home") as stack:
            result = distill(stack, paths, args.epochs, x_test, y_test)
    result.update(teacher_training_seconds=round(teacher_seconds, 1), machine=machine())
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def distill(stack: ServiceStack, paths: dict, epochs: int, x_test, y_test) -> dict:
    clock = time.perf_counter()
    ids = {
        name: stack.upload(path, "teacher" if name == "teacher" else "dataset")["id"]
        for name, path in paths.items()
    }
    upload_seconds = time.perf_counter() - clock
    request = {
        "teacher": {"file_id": ids["teacher"], "architecture": TEACHER.model_dump()},
        "student": {
            "architecture": {"family": "mlp", "input_shape": [784], "num_classes": 10, "hidden_sizes": [64]}
        },
        "dataset": {"train_file_id": ids["train"], "validation_file_id": ids["test"]},
        "distillation": {"temperature": 4.0, "alpha": 0.9, "beta": 0.1},
        "training": {"epochs": epochs, "batch_size": 128, "learning_rate": 0.001},
    }
    clock = time.perf_counter()
    job = stack.client.post("/v1/jobs", json=request).json()
    job = stack.wait_for_job(job["id"], timeout=3600)
    job_seconds = time.perf_counter() - clock
    assert job["status"] == "succeeded", job["error"]

    pt2 = stack.client.get(f"/v1/jobs/{job['id']}/artifacts/student.pt2").content
    with torch.no_grad():
        logits = torch.export.load(io.BytesIO(pt2)).module()(torch.from_numpy(x_test))
    measured = (logits.argmax(1) == torch.from_numpy(y_test)).float().mean().item()
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
        "upload_seconds": round(upload_seconds, 1),
        "job_seconds_submit_to_succeeded": round(job_seconds, 1),
        "job_seconds_worker": job["finished_at"] - job["started_at"],
    }


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": "cpu",
    }


if __name__ == "__main__":
    main()
