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

import httpx
import numpy as np
import torch

from tests.stack import ServiceStack

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT.parent / "shared" / "datasets" / "mnist"
RESULTS = ROOT / "benchmarks" / "results"
FINISHED = ("succeeded", "failed", "cancelled")


# --- data -------------------------------------------------------------------------------------


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


# --- the service ------------------------------------------------------------------------------


class ServiceClient:
    """The HTTP calls a user makes: upload files, submit a job, wait for it, download its outputs."""

    def __init__(self, url: str, api_key: str | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url
        self.http = httpx.Client(base_url=url, headers=headers, timeout=120)

    def close(self) -> None:
        self.http.close()

    def upload(self, path: Path, purpose: str) -> str:
        with path.open("rb") as f:
            response = self.http.post("/v1/files", files={"file": (path.name, f)}, data={"purpose": purpose})
        return checked(response, 201)["id"]

    def submit(self, request: dict) -> str:
        return checked(self.http.post("/v1/jobs", json=request), 201)["id"]

    def job(self, job_id: str) -> dict:
        return checked(self.http.get(f"/v1/jobs/{job_id}"), 200)

    def wait(self, job_id: str, timeout: float, poll_seconds: float = 1.0) -> dict:
        """The job once it has ended; raise if it did not succeed."""
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["status"] not in FINISHED:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(poll_seconds)
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {job_id} ended {job['status']}: {job['error']}")
        return job

    def metric_series(self, job_id: str, name: str) -> list[float]:
        """One per-epoch metric of a job, in epoch order."""
        points = checked(self.http.get(f"/v1/jobs/{job_id}/metrics"), 200)["data"]
        return [point["value"] for point in sorted(points, key=lambda p: p["epoch"]) if point["name"] == name]

    def artifact(self, job_id: str, name: str) -> bytes:
        response = self.http.get(f"/v1/jobs/{job_id}/artifacts/{name}")
        if response.status_code != 200:
            raise RuntimeError(f"GET artifact {name}: {response.status_code} {response.text}")
        return response.content


def checked(response: httpx.Response, status: int) -> dict:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    return response.json()


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
        client = ServiceClient(stack.url)
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
