"""The HTTP calls a user of the service makes, for the end-to-end tests and the benchmarks: upload files,
submit a job, wait for it, read its metrics, download its artifacts."""

import time
from collections.abc import Callable
from pathlib import Path

import httpx

FINISHED = ("succeeded", "failed", "cancelled")


class ServiceClient(httpx.Client):
    """An httpx client of the service at `url`. `diagnostics`, if given, is added to the error of a job
    that does not end in time (the tests pass the logs of the processes they started)."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 120,
        diagnostics: Callable[[], str] | None = None,
    ):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        super().__init__(base_url=url, headers=headers, timeout=timeout)
        self.diagnostics = diagnostics

    def upload(self, path: Path, purpose: str) -> dict:
        with path.open("rb") as f:
            response = self.post("/v1/files", files={"file": (path.name, f)}, data={"purpose": purpose})
        return checked(response, 201)

    def submit(self, request: dict) -> dict:
        return checked(self.post("/v1/jobs", json=request), 201)

    def job(self, job_id: str) -> dict:
        return checked(self.get(f"/v1/jobs/{job_id}"), 200)

    def wait_for_job(
        self,
        job_id: str,
        timeout: float = 180,
        until: Callable[[dict], bool] | None = None,
        poll: float = 0.2,
    ) -> dict:
        """The job once it has ended (or once `until(job)` holds)."""
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["status"] not in FINISHED and not (until and until(job)):
            if time.monotonic() > deadline:
                details = f"\n{self.diagnostics()}" if self.diagnostics else ""
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f} s{details}")
            time.sleep(poll)
        return job

    def wait_for_success(self, job_id: str, timeout: float) -> dict:
        job = self.wait_for_job(job_id, timeout, poll=1.0)
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {job_id} ended {job['status']}: {job['error']}")
        return job

    def metric_series(self, job_id: str, name: str) -> list[float]:
        """One per-epoch metric of a job, in epoch order."""
        points = checked(self.get(f"/v1/jobs/{job_id}/metrics"), 200)["data"]
        return [point["value"] for point in sorted(points, key=lambda p: p["epoch"]) if point["name"] == name]

    def event_messages(self, job_id: str) -> list[str]:
        """Every event message of a job, in order, walking the pages."""
        messages, params = [], {"limit": 100}
        while True:
            page = checked(self.get(f"/v1/jobs/{job_id}/events", params=params), 200)
            messages += [event["message"] for event in page["data"]]
            if not page["has_more"] or not page["data"]:
                return messages
            params["after"] = page["data"][-1]["id"]

    def artifact(self, job_id: str, name: str) -> bytes:
        response = self.get(f"/v1/jobs/{job_id}/artifacts/{name}")
        if response.status_code != 200:
            raise RuntimeError(f"GET artifact {name}: {response.status_code} {response.text}")
        return response.content


def checked(response: httpx.Response, status: int) -> dict:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    return response.json()
