"""What the benchmarks share: MNIST from its IDX files, the service (started here or at a URL) as a
user's HTTP client sees it, timing, measuring a downloaded student, and the machine's description."""

import argparse
import gzip
import io
import json
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from engine.specs import MLPSpec
from tests.factories import save_teacher, train_teacher
from tests.service_client import ServiceClient
from tests.stack import ServiceStack

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT.parent / "shared" / "datasets" / "mnist"
RESULTS = ROOT / "benchmarks" / "results"


# --- data -------------------------------------------------------------------------------------


MNIST_TEACHER = MLPSpec(input_shape=[784], num_classes=10, hidden_sizes=[1200, 1200])


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
    files = {"teacher": folder / "teacher.safetensors", "train": folder / "train.npz",
             "validation": folder / "test.npz"}  # fmt: skip
    save_teacher(files["teacher"], train_teacher(MNIST_TEACHER, x_train, y_train, epochs=1))
    np.savez(files["train"], x=x_train, y=y_train)
    np.savez(files["validation"], x=x_test, y=y_test)
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


def write_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
