"""A job over two devices (`training.devices: 2`: two gloo processes on the CPU) through the real API and
worker: it succeeds like a one-device job; killed mid-training with its worker's child, it leaves no rank
behind, resumes from its checkpoint and ends with the student it would have had; cancelled, every rank
stops. A worker without the GPUs asked for fails the job at once."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import job_request
from tests.e2e.test_worker_loss import requeues, resumed_steps
from tests.stack import FRAGILE, ServiceStack

pytestmark = pytest.mark.e2e

TWO_DEVICES = {"epochs": 3, "batch_size": 32, "devices": 2}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Short heartbeats, so that a lost worker is noticed in seconds, and a checkpoint at every step."""
    with ServiceStack(tmp_path_factory.mktemp("stack"), **FRAGILE) as running:
        yield running


def descendants(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid for child in map(int, found) for pid in (child, *descendants(child))]


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its new parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def artifact_digests(stack: ServiceStack, job_id: str) -> dict[str, str]:
    listed = stack.client.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]
    return {artifact["name"]: artifact["sha256"] for artifact in listed}


def test_a_two_device_job_killed_mid_training_resumes_and_ends_as_one_never_killed(stack, task):
    teacher = stack.client.upload(task.teacher, "teacher")["id"]
    train = stack.client.upload(task.train, "dataset")["id"]
    request = job_request(teacher, train, training=TWO_DEVICES)

    twin = stack.client.wait_for_job(stack.client.post("/v1/jobs", json=request).json()["id"], timeout=120)
    assert twin["status"] == "succeeded", f"{twin['error']}\n{stack.logs()}"
    assert set(twin["metrics"]) >= {"teacher", "student", "agreement", "accuracy_retention", "compression"}
    assert twin["metrics"]["student"]["accuracy"] > 0.8
    assert sorted(artifact_digests(stack, twin["id"])) == [
        "README.md", "metrics.json", "student.json", "student.pt2", "student.safetensors",
    ]  # fmt: skip

    job_id = stack.client.post("/v1/jobs", json=request).json()["id"]
    job = stack.client.wait_for_job(
        job_id, timeout=120, until=lambda j: j["status"] == "running" and j["progress"]["step"] >= 15
    )
    assert job["status"] == "running", stack.logs()
    (child,) = stack.training_processes()
    ranks = descendants(child)  # the launcher (torchrun) and its two ranks
    assert len(ranks) == 3, ranks
    os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in ranks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in ranks), "ranks outlived their worker"

    job = stack.client.wait_for_job(job_id, timeout=180)
    assert job["status"] == "succeeded", f"{job['error']}\n{stack.logs()}"
    assert requeues(stack, job_id) == 1, stack.client.event_messages(job_id)
    (resumed,) = resumed_steps(stack, job_id)
    assert (
        15 <= resumed < job["progress"]["step"] == job["progress"]["total_steps"] == twin["progress"]["step"]
    )
    series = stack.client.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 100}).json()["data"]
    assert [p["epoch"] for p in series if p["name"] == "validation_accuracy"] == list(range(1, 4))
    assert (
        artifact_digests(stack, job_id)["student.safetensors"]
        == artifact_digests(stack, twin["id"])["student.safetensors"]
    )


def test_a_cancelled_two_device_job_stops_on_every_rank(stack, task):
    teacher = stack.client.upload(task.teacher, "teacher")["id"]
    train = stack.client.upload(task.train, "dataset")["id"]
    request = job_request(teacher, train, training=TWO_DEVICES | {"epochs": 50})
    job_id = stack.client.post("/v1/jobs", json=request).json()["id"]
    stack.client.wait_for_job(
        job_id, timeout=120, until=lambda j: j["status"] == "running" and j["progress"]["step"] >= 5
    )
    (child,) = stack.training_processes()
    ranks = descendants(child)
    assert stack.client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelling"

    job = stack.client.wait_for_job(job_id, timeout=60)
    assert job["status"] == "cancelled", stack.logs()
    assert job["progress"]["step"] < job["progress"]["total_steps"]
    assert "Job cancelled; no student was saved." in stack.client.event_messages(job_id)
    assert not any(alive(pid) for pid in ranks)  # the task waited for them
    assert stack.client.get(f"/v1/jobs/{job_id}/artifacts").json()["data"] == []


def test_a_job_asking_for_more_gpus_than_the_worker_has_fails_device_unavailable(stack, task):
    teacher = stack.client.upload(task.teacher, "teacher")["id"]
    train = stack.client.upload(task.train, "dataset")["id"]
    request = job_request(teacher, train, training={"device": "cuda", "devices": 64})
    job = stack.client.wait_for_job(stack.client.post("/v1/jobs", json=request).json()["id"], timeout=60)
    assert job["status"] == "failed", stack.logs()
    assert job["error"]["code"] == "device_unavailable"
    assert "GPU" in job["error"]["message"]
