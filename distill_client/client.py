"""`Client`: every endpoint of the distill HTTP API (v1), with typed results and the server's errors raised
as `APIError`. Connection errors and 429/502/503/504 answers are retried with exponential back-off (or
the server's `Retry-After`); every POST carries an `Idempotency-Key`, the same on each retry, so a retry
never makes a second job or file. `wait` follows the job's event stream (falling back to polling);
downloads resume with `Range` and are checked against their sha256. A transformers model folder is
uploaded as one zip made here, and a job's student folder unpacked from its zip."""

import hashlib
import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import httpx

from distill_client.errors import APIError, DistillError, DownloadCorrupt, WaitTimeout
from distill_client.model_folder import (
    STUDENT_FOLDER,
    OnConverted,
    archived_model_folder,
    unpack_model_folder,
)
from distill_client.objects import Artifact, Event, File, Job, MetricPoint
from distill_client.sse import messages

DEFAULT_URL = "http://127.0.0.1:8000"
RETRIED_STATUSES = frozenset({429, 502, 503, 504})
CHUNK_BYTES = 1024 * 1024
OnProgress = Callable[[int, int], None]  # (bytes sent, bytes in all)


class Client:
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
    ):
        """`url` and `api_key` default to $DISTILL_URL (else the embedded default) and $DISTILL_API_KEY."""
        self.url = (url or os.environ.get("DISTILL_URL") or DEFAULT_URL).rstrip("/")
        api_key = api_key or os.environ.get("DISTILL_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retries, self.backoff, self.max_backoff = retries, backoff_seconds, max_backoff_seconds
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- files -----------------------------------------------------------------------------------

    def upload_file(
        self,
        path: str | Path,
        purpose: str,
        idempotency_key: str | None = None,
        on_progress: OnProgress | None = None,
    ) -> File:
        """Upload a local file (`purpose`: teacher, dataset or tokenizer); `on_progress(sent, total)` hears
        of the bytes read for sending as they go."""
        path = Path(path)

        def form() -> dict:  # a fresh stream for every try
            stream = path.open("rb") if on_progress is None else _Reported(path.open("rb"), on_progress)
            return {"files": {"file": (path.name, stream)}, "data": {"purpose": purpose}}

        return File.of(self._post("/v1/files", form, idempotency_key).json())

    def upload_model_folder(
        self,
        folder: str | Path,
        idempotency_key: str | None = None,
        on_progress: OnProgress | None = None,
        on_converted: OnConverted | None = None,
    ) -> File:
        """Upload a transformers `save_pretrained` folder as an `hf` teacher: a zip of the files
        `from_pretrained` reads (`<folder name>.zip`), made here. Pickled weights (`pytorch_model.bin`, or
        its shards) are converted to safetensors first, which needs torch and safetensors;
        `on_converted(pickled names, safetensors names)` hears of it."""
        with archived_model_folder(Path(folder), on_converted) as archive:
            return self.upload_file(archive, "teacher", idempotency_key, on_progress)

    def get_file(self, file_id: str) -> File:
        return File.of(self._request("GET", f"/v1/files/{file_id}").json())

    def list_files(self, purpose: str | None = None) -> Iterator[File]:
        return map(File.of, self._pages("/v1/files", {"purpose": purpose}))

    def delete_file(self, file_id: str) -> None:
        self._request("DELETE", f"/v1/files/{file_id}")

    def download_file(self, file_id: str, destination: str | Path) -> Path:
        return self._download(
            f"/v1/files/{file_id}/content", Path(destination), self.get_file(file_id).sha256
        )

    # --- jobs ------------------------------------------------------------------------------------

    def create_job(self, request: dict, idempotency_key: str | None = None) -> Job:
        """Submit a job: `request` is the body of `POST /v1/jobs`."""
        return Job.of(self._post("/v1/jobs", lambda: {"json": request}, idempotency_key).json())

    def get_job(self, job_id: str) -> Job:
        return Job.of(self._request("GET", f"/v1/jobs/{job_id}").json())

    def list_jobs(self, status: str | None = None) -> Iterator[Job]:
        return map(Job.of, self._pages("/v1/jobs", {"status": status}))

    def cancel_job(self, job_id: str) -> Job:
        return Job.of(self._post(f"/v1/jobs/{job_id}/cancel", dict, None).json())

    def list_events(self, job_id: str, after: str | None = None) -> Iterator[Event]:
        return map(Event.of, self._pages(f"/v1/jobs/{job_id}/events", {"after": after}, limit=100))

    def follow_events(
        self, job_id: str, after: str | None = None, timeout: float | None = None
    ) -> Iterator[Event]:
        """The job's events as they happen (after the event id `after`), until it ends or `timeout`
        seconds have passed; a dropped stream is resumed where it stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for attempt in self._tries():
            try:
                for event in self._stream_events(job_id, after, deadline):
                    after = event.id
                    yield event
                return
            except httpx.TransportError as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                attempt.failed(exc)

    def metrics(self, job_id: str, name: str | None = None) -> list[MetricPoint]:
        params = {"name": name} if name else {}
        body = self._request("GET", f"/v1/jobs/{job_id}/metrics", params=params).json()
        return [MetricPoint.of(point) for point in body["data"]]

    def list_artifacts(self, job_id: str) -> list[Artifact]:
        body = self._request("GET", f"/v1/jobs/{job_id}/artifacts").json()
        return [Artifact.of(artifact) for artifact in body["data"]]

    def download_artifact(self, job_id: str, name: str, destination: str | Path) -> Path:
        """Download one artifact to `destination` (a file path), resuming a `.part` left by an earlier try."""
        artifact = next((a for a in self.list_artifacts(job_id) if a.name == name), None)
        if artifact is None:
            raise APIError(404, "not_found", f"Job {job_id} has no artifact {name!r}.", "name")
        return self._download(f"/v1/jobs/{job_id}/artifacts/{name}", Path(destination), artifact.sha256)

    def download_model_folder(self, job_id: str, destination: str | Path) -> Path:
        """Download the job's student as a transformers folder (its artifact `student.hf.zip`) and unpack it
        into the folder `destination` (replaced), which `from_pretrained` loads; returns it."""
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="distill-download-", dir=destination.parent) as workspace:
            archive = self.download_artifact(job_id, STUDENT_FOLDER, Path(workspace) / STUDENT_FOLDER)
            return unpack_model_folder(archive, destination)

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        on_event: Callable[[Event], None] | None = None,
        poll_seconds: float = 2.0,
    ) -> Job:
        """The job once it has ended, following its event stream (`on_event` sees each event); polls
        instead where the stream is unavailable. Raises `WaitTimeout` after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for event in self.follow_events(job_id, timeout=timeout):
                if on_event:
                    on_event(event)
        except DistillError:
            pass  # the stream is unavailable: polling still sees how the job ends
        while True:
            job = self.get_job(job_id)
            if job.finished:
                return job
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeout(job, timeout)
            time.sleep(poll_seconds if left is None else min(poll_seconds, left))

    # --- health ----------------------------------------------------------------------------------

    def ready(self) -> bool:
        """Whether the API, its database and its broker answer (`GET /readyz`)."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    # --- transport -------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        return self._send(method, path, lambda: kwargs, headers={})

    def _post(self, path: str, build: Callable[[], dict], idempotency_key: str | None) -> httpx.Response:
        key = idempotency_key or uuid.uuid4().hex
        return self._send("POST", path, build, headers={"Idempotency-Key": key})

    def _send(self, method: str, path: str, build: Callable[[], dict], headers: dict) -> httpx.Response:
        for attempt in self._tries():
            try:
                response = self._http.request(method, path, headers=headers, **build())
            except httpx.TransportError as exc:
                attempt.failed(exc)
                continue
            if response.status_code in RETRIED_STATUSES and not attempt.last:
                attempt.wait(_retry_after(response))
                continue
            if response.is_error:
                raise api_error(response)
            return response
        raise AssertionError("unreachable: the last try raises")

    def _pages(self, path: str, params: dict, limit: int = 100) -> Iterator[dict]:
        params = {name: value for name, value in params.items() if value is not None} | {"limit": limit}
        while True:
            page = self._request("GET", path, params=params).json()
            yield from page["data"]
            if not page["has_more"] or not page["data"]:
                return
            params["after"] = page["data"][-1]["id"]

    def _stream_events(self, job_id: str, after: str | None, deadline: float | None) -> Iterator[Event]:
        headers = {"Accept": "text/event-stream", **({"Last-Event-ID": after} if after else {})}
        # The server sends a keep-alive every 15 s: a read that waits longer means the stream is gone.
        read = 40.0 if deadline is None else max(0.1, min(40.0, deadline - time.monotonic()))
        timeout = httpx.Timeout(30.0, read=read)
        with self._http.stream(
            "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout
        ) as response:
            if response.is_error:
                response.read()
                raise api_error(response)
            for message in messages(response.iter_lines()):
                if message.event == "end":
                    return
                if message.event == "job.event":
                    yield Event.of(json.loads(message.data))
                if deadline is not None and time.monotonic() >= deadline:
                    return

    def _download(self, path: str, destination: Path, sha256: str) -> Path:
        part = destination.with_name(destination.name + ".part")
        for attempt in self._tries():
            resumed_from = part.stat().st_size if part.exists() else 0
            try:
                self._fetch_into(path, part, resumed_from, sha256)
            except httpx.TransportError as exc:
                attempt.failed(exc)
                continue
            if _sha256_of(part) == sha256:
                part.replace(destination)
                return destination
            part.unlink()  # a stale or damaged part: the next try starts from nothing
            if not resumed_from:
                raise DownloadCorrupt(f"{path}: the bytes received do not have the sha256 {sha256}")
        raise AssertionError("unreachable: the last try raises")

    def _fetch_into(self, path: str, part: Path, offset: int, sha256: str) -> None:
        headers = {"Range": f"bytes={offset}-", "If-Range": f'"{sha256}"'} if offset else {}
        # With DISTILL_S3_PRESIGN the bytes come from the bucket (httpx drops the key on the way there).
        with self._http.stream("GET", path, headers=headers, follow_redirects=True) as response:
            if response.status_code == 416:  # the part is as long as the file, or longer
                return
            if response.is_error:
                response.read()
                raise api_error(response)
            with part.open("ab" if response.status_code == 206 else "wb") as out:
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    out.write(chunk)

    def _tries(self) -> Iterator["_Try"]:
        for number in range(self.retries + 1):
            yield _Try(self, number, last=number == self.retries)


class _Reported:
    """A file read for upload that tells `on_progress` how far the reading has come."""

    def __init__(self, f: BinaryIO, on_progress: OnProgress):
        self._f, self._on_progress = f, on_progress
        self._total = os.fstat(f.fileno()).st_size

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._on_progress(self._f.tell(), self._total)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def fileno(self) -> int:  # what httpx reads the file's length from
        return self._f.fileno()


class _Try:
    """One try of a retried call: `failed` sleeps before the next (or raises on the last)."""

    def __init__(self, client: Client, number: int, last: bool):
        self.client, self.number, self.last = client, number, last

    def failed(self, error: Exception) -> None:
        if self.last:
            raise DistillError(f"cannot reach {self.client.url}: {type(error).__name__}: {error}") from error
        self.wait(None)

    def wait(self, seconds: float | None) -> None:
        if seconds is None:
            seconds = min(self.client.max_backoff, self.client.backoff * 2**self.number) * random.uniform(
                0.5, 1
            )
        time.sleep(seconds)


def api_error(response: httpx.Response) -> APIError:
    try:
        error = response.json()["error"]
        return APIError(response.status_code, error["code"], error["message"], error.get("param"))
    except (ValueError, KeyError, TypeError):
        return APIError(
            response.status_code,
            f"http_{response.status_code}",
            response.text[:300] or response.reason_phrase,
        )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return min(float(value), 300.0) if value.replace(".", "", 1).isdigit() else None


def _sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
