"""A worker killed with SIGKILL mid-training does not lose the job: it is re-queued and finishes."""

import os
import random
import signal

import pytest

from tests.e2e.conftest import job_request
from tests.stack import ServiceStack

pytestmark = pytest.mark.e2e


@pytest.fixture
def fragile_stack(tmp_path):
    """Short heartbeats so that a lost worker is noticed in seconds, not a minute."""
    with ServiceStack(
        tmp_path, heartbeat_seconds="0.3", heartbeat_timeout_seconds="4", reaper_interval_seconds="0.5"
    ) as running:
        yield running


def requeues(stack: ServiceStack, job_id: str) -> int:
    events = stack.client.get(f"/v1/jobs/{job_id}/events").json()["data"]
    return sum(e["message"].startswith("Re-queued: its worker stopped answering") for e in events)


def kill_while_training(stack: ServiceStack, job_id: str, step: int) -> None:
    """SIGKILL the process training the job once it reaches `step` (progress restarts with each attempt)."""
    job = stack.wait_for_job(
        job_id, timeout=120, until=lambda j: j["status"] == "running" and j["progress"]["step"] >= step
    )
    assert job["status"] == "running", stack.logs()
    for pid in stack.training_processes():
        os.kill(pid, signal.SIGKILL)


def test_sigkilled_training_is_requeued_and_finishes_whole(fragile_stack, task):
    stack, rng = fragile_stack, random.Random(7)
    teacher = stack.upload(task.teacher, "teacher")["id"]
    train = stack.upload(task.train, "dataset")["id"]
    request = job_request(teacher, train, training={"epochs": 3, "batch_size": 32})
    job_id = stack.client.post("/v1/jobs", json=request).json()["id"]

    for kills in (1, 2):
        kill_while_training(stack, job_id, step=rng.randint(1, 20))
        stack.wait_for_job(job_id, timeout=60, until=lambda _job, k=kills: requeues(stack, job_id) == k)

    job = stack.wait_for_job(job_id, timeout=240)
    assert job["status"] == "succeeded", f"{job['error']}\n{stack.logs()}"
    events = [e["message"] for e in stack.client.get(f"/v1/jobs/{job_id}/events").json()["data"]]
    assert requeues(stack, job_id) == 2 and "Attempt 3 starts again from the beginning." in events
    series = stack.client.get(f"/v1/jobs/{job_id}/metrics", params={"name": "loss"}).json()["data"]
    assert [point["epoch"] for point in series] == [1, 2, 3]  # complete, nothing doubled
    names = sorted(a["name"] for a in stack.client.get(f"/v1/jobs/{job_id}/artifacts").json()["data"])
    assert names == ["metrics.json", "student.json", "student.pt2", "student.safetensors"]
