"""What the benchmarks share: MNIST from its IDX files, a small convolutional teacher for it, the service
(started here or at a URL) as a user's HTTP client sees it, timing, measuring a downloaded student, and the
machine's description."""

import argparse
import gzip
import io
import json
import math
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.plan.specs import MLPSpec
from tests.factories import save_teacher, train_teacher
from tests.service_client import ServiceClient
from tests.stack import ServiceStack

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT.parent / "shared" / "datasets" / "mnist"
RESULTS = ROOT / "benchmarks" / "results"


# --- data -------------------------------------------------------------------------------------


MNIST_TEACHER = MLPSpec(input_shape=[784], num_classes=10, hidden_sizes=[1200, 1200])
# Hinton et al.'s 784-800-800-10 student, over images [1, 28, 28] as the two-convolution teacher reads them.
IMAGE_STUDENT = MLPSpec(input_shape=[1, 28, 28], num_classes=10, hidden_sizes=[800, 800])


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped) as the array it stores: a magic number, the dimensions, then the data."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """`split` "train" or "t10k": images as float32 [N, 784] in [0, 1], labels as int64 [N]."""
    x = read_idx(folder / f"{split}-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255.0
    y = read_idx(folder / f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
    return x, y


def mnist_teacher_files(folder: Path, data: Path) -> dict[str, Path]:
    """`MNIST_TEACHER` trained one epoch with plain PyTorch, the training set, and the test set as
    validation, as files a job reads."""
    x_train, y_train = load_mnist(data, "train")
    x_test, y_test = load_mnist(data, "t10k")
    teacher = train_teacher(MNIST_TEACHER, x_train, y_train, epochs=1)
    return safetensors_job_files(folder, teacher, x_train, y_train, x_test, y_test)


def safetensors_job_files(
    folder: Path, teacher: nn.Module, x_train, y_train, x_val, y_val
) -> dict[str, Path]:
    """The teacher's weights (safetensors), the training set, and the validation set, as files a job reads."""
    files = {"teacher": folder / "teacher.safetensors", "train": folder / "train.npz",
             "validation": folder / "test.npz"}  # fmt: skip
    save_teacher(files["teacher"], teacher)
    np.savez(files["train"], x=x_train, y=y_train)
    np.savez(files["validation"], x=x_val, y=y_val)
    return files


def upload_files(client: ServiceClient, files: dict[str, Path]) -> dict[str, str]:
    """Each file uploaded, the teacher as a teacher and the others as datasets: their ids, by name."""
    return {
        name: client.upload(path, "teacher" if name == "teacher" else "dataset")["id"]
        for name, path in files.items()
    }


def mnist_images(folder: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The training images [N, 1, 28, 28] and labels, then the test images and labels, as tensors."""
    x_train, y_train = (torch.from_numpy(a) for a in load_mnist(folder, "train"))
    x_test, y_test = (torch.from_numpy(a) for a in load_mnist(folder, "t10k"))
    return x_train.view(-1, 1, 28, 28), y_train, x_test.view(-1, 1, 28, 28), y_test


class TwoConvTeacher(nn.Module):
    """PyTorch's MNIST example network (without its dropout: the teacher is frozen)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3)
        self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def trained_two_conv_teacher(x: Tensor, y: Tensor, epochs: int = 1) -> nn.Module:
    """A `TwoConvTeacher` trained on images [N, 1, 28, 28] with plain PyTorch: batch 128, Adam, the learning
    rate decaying from 1e-3 to 0 on a cosine."""
    torch.manual_seed(0)
    teacher = TwoConvTeacher()
    optimizer = torch.optim.Adam(teacher.parameters(), lr=1e-3)
    steps = epochs * math.ceil(len(x) / 128)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    for _ in range(epochs):
        for index in torch.randperm(len(x)).split(128):
            loss = F.cross_entropy(teacher(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return teacher.eval()


def two_conv_job_files(folder: Path, teacher: nn.Module, x_train, y_train, x_val, y_val) -> dict[str, Path]:
    """The teacher as a pt2 program, the training set, and the validation set, as files a job reads."""
    files = {
        "teacher": folder / "teacher.pt2",
        "train": folder / "train.npz",
        "validation": folder / "test.npz",
    }
    program = torch.export.export(
        teacher, (x_val[:2],), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)
    )
    torch.export.save(program, files["teacher"])
    np.savez(files["train"], x=x_train.numpy(), y=y_train.numpy())
    np.savez(files["validation"], x=x_val.numpy(), y=y_val.numpy())
    return files


# --- the service ------------------------------------------------------------------------------


@contextmanager
def service(url: str | None, api_key: str | None, home: Path) -> Iterator[ServiceClient]:
    """A client of the service at `url`, or of an embedded one (API + worker processes) started in `home`
    and stopped afterwards; the embedded one's logs are printed if anything fails."""
    if url:
        client = ServiceClient(url, api_key)
        try:
            yield client
        finally:
            client.close()
        return
    with ServiceStack(home) as stack:
        client = ServiceClient(stack.url, diagnostics=stack.logs)
        try:
            yield client
        except BaseException:
            print(stack.logs(), file=sys.stderr)
            raise
        finally:
            client.close()


# --- measuring --------------------------------------------------------------------------------


class Timer:
    """`with Timer() as timer: ...`, then `timer.seconds`."""

    def __enter__(self) -> "Timer":
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = round(time.perf_counter() - self.started, 1)


def exported_predictions(pt2: bytes, x: np.ndarray) -> torch.Tensor:
    """Class predictions of a downloaded `student.pt2`, run with plain PyTorch and no project code."""
    with torch.no_grad():
        return torch.export.load(io.BytesIO(pt2)).module()(torch.from_numpy(x)).argmax(1)


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


# --- command line and results -----------------------------------------------------------------


def argument_parser(doc: str, result_name: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: where MNIST is, which service, where the result goes."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=MNIST, help="folder with the four MNIST IDX .gz files")
    parser.add_argument(
        "--url", help="an already-running service to use (default: start an embedded one in a temp dir)"
    )
    parser.add_argument("--api-key", help="sent as 'Authorization: Bearer' to a service with keys on")
    parser.add_argument("--out", type=Path, default=RESULTS / f"{result_name}.json", help="result JSON")
    return parser


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads of this process and of the service it starts (OMP_NUM_THREADS); default: "
        "torch's own, one per core. On a machine that other work shares, 1 keeps a process's threads "
        "from waiting on each other whenever that work takes a core (ten times slower steps here)",
    )


def write_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
