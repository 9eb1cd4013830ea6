"""A worker killed with SIGKILL mid-training does not lose the job: it is re-queued, resumes from its
checkpoint and finishes with the student it would have had."""

import hashlib
import os
import random
import re
import signal

import pytest

from tests.cgroups import memory_cgroup
from tests.e2e.conftest import job_request
from tests.stack import FRAGILE, ServiceStack
from tests.storages import stored_keys

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite-filesystem", "postgres-redis"])
def fragile_stack(request, tmp_path):
    """Short heartbeats, so that a lost worker is noticed in seconds, and a checkpoint at every step;
    on the embedded backends and on the scaled-out ones (where Redis redelivers the killed task too)."""
    backends = {}
    if request.param == "postgres-redis":
        backends = {"database_url": request.getfixturevalue("postgres_url"), "queue": "worker-loss",
                    "broker_url": request.getfixturevalue("redis_broker_url")}  # fmt: skip
    with ServiceStack(tmp_path, **backends, **FRAGILE) as running:
        yield running


def requeues(stack: ServiceStack, job_id: str) -> int:
    """Each by its worker, which saw its child die, or by a reaper, which saw its heartbeat stop."""
    return sum(m.startswith("Re-queued: ") for m in stack.client.event_messages(job_id))


def resumed_steps(stack: ServiceStack, job_id: str) -> list[int]:
    """The step each resumed attempt continued from, by its event."""
    found = (
        re.match(r"Resumed from the checkpoint at step (\d+) of", m)
        for m in stack.client.event_messages(job_id)
    )
    return [int(match[1]) for match in found if match]


def kill_while_training(stack: ServiceStack, job_id: str, step: int) -> None:
    """SIGKILL the process training the job once it is past `step`."""
    job = stack.client.wait_for_job(
        job_id, timeout=120, until=lambda j: j["status"] == "running" and j["progress"]["step"] >= step
    )
    assert job["status"] == "running", stack.logs()
    for pid in stack.training_processes():
        os.kill(pid, signal.SIGKILL)


def test_sigkilled_training_resumes_from_its_checkpoint_and_ends_as_if_never_killed(fragile_stack, task):
    stack, rng = fragile_stack, random.Random(7)
    teacher = stack.client.upload(task.teacher, "teacher")["id"]
    train = stack.client.upload(task.train, "dataset")["id"]
    request = job_request(teacher, train, training={"epochs": 10, "batch_size": 32})
    job_id = stack.client.post("/v1/jobs", json=request).json()["id"]

    kill_at = rng.randint(5, 20)
    for kills in (1, 2):
        kill_while_training(stack, job_id, step=kill_at)
        stack.client.wait_for_job(
            job_id, timeout=60, until=lambda _job, k=kills: len(resumed_steps(stack, job_id)) == k
        )
        kill_at = resumed_steps(stack, job_id)[-1] + rng.randint(5, 20)

    job = stack.client.wait_for_job(job_id, timeout=240)
    assert job["status"] == "succeeded", f"{job['error']}\n{stack.logs()}"
    assert requeues(stack, job_id) == 2, stack.client.event_messages(job_id)
    first, second = resumed_steps(stack, job_id)
    assert 0 < first < second < job["progress"]["total_steps"] == job["progress"]["step"]
    series = stack.client.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 100}).json()["data"]
    for name in ("loss", "soft_loss", "hard_loss", "validation_accuracy", "validation_agreement"):
        assert [p["epoch"] for p in series if p["name"] == name] == list(range(1, 11)), name  # once each
    artifacts = {
        a["name"]: a["sha256"] for a in stack.client.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]
    }
    assert sorted(artifacts) == [
        "README.md",
        "metrics.json",
        "student.json",
        "student.pt2",
        "student.safetensors",
    ]
    assert not list(stack.home.glob(f"storage/jobs/*/{job_id}/checkpoint.pt"))  # gone with the job

    twin_id = stack.client.post("/v1/jobs", json=request).json()["id"]  # the same job, never killed
    assert stack.client.wait_for_job(twin_id, timeout=120)["status"] == "succeeded"
    twin = {a["name"]: a["sha256"] for a in stack.client.get(f"/v1/jobs/{twin_id}/artifacts").json()["data"]}
    assert twin["student.safetensors"] == artifacts["student.safetensors"]


@pytest.mark.s3
@pytest.mark.postgres
@pytest.mark.redis
def test_a_worker_on_another_machine_finishes_the_job_of_one_that_is_gone(
    tmp_path, postgres_url, redis_broker_url, s3_url, task
):
    """PostgreSQL, Redis and a bucket are all the processes share: each has a home of its own. The machine
    training the job goes (its worker and children SIGKILLed); a worker elsewhere resumes the job from
    the checkpoint in the bucket and finishes it."""
    with ServiceStack(
        tmp_path, database_url=postgres_url, broker_url=redis_broker_url, queue="no-shared-disk",
        storage_url=s3_url, own_homes=True, **FRAGILE,
    ) as stack:  # fmt: skip
        teacher = stack.client.upload(task.teacher, "teacher")["id"]
        train = stack.client.upload(task.train, "dataset")["id"]
        request = job_request(teacher, train, training={"epochs": 10, "batch_size": 32})
        job_id = stack.client.post("/v1/jobs", json=request).json()["id"]
        stack.client.wait_for_job(
            job_id, timeout=120, until=lambda j: j["status"] == "running" and j["progress"]["step"] >= 12
        )
        stack.start_worker("other-machine")
        stack.kill("worker")

        job = stack.client.wait_for_job(job_id, timeout=240)
        assert job["status"] == "succeeded", f"{job['error']}\n{stack.logs()}"
        assert len(resumed_steps(stack, job_id)) == 1 and resumed_steps(stack, job_id)[0] >= 12
        listed = stack.client.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]
        for artifact in listed:
            body = stack.client.artifact(job_id, artifact["name"])
            assert hashlib.sha256(body).hexdigest() == artifact["sha256"], artifact["name"]
        assert not [
            key for key in stored_keys(stack.storage) if key.endswith("checkpoint.pt")
        ]  # gone, as the job
    assert not list(tmp_path.glob("*/storage"))  # no process kept an object on its own disk


def test_a_job_the_kernel_kills_for_memory_fails_out_of_memory_at_once_and_the_worker_goes_on(tmp_path, task):
    """Accepted (the server's bound is the machine's), but more than the worker's cgroup holds: the
    kernel's OOM killer, not the allocator, stops it. One try, not three; the next job runs."""
    with memory_cgroup(1024**3) as cgroup, ServiceStack(tmp_path, worker_cgroup=cgroup) as stack:
        teacher = stack.client.upload(task.teacher, "teacher")["id"]
        train = stack.client.upload(task.train, "dataset")["id"]
        # 151M parameters: 2.4 GB with Adam's state
        huge = {"architecture": {"family": "mlp", "input_shape": [16], "num_classes": 4,
                                 "hidden_sizes": [12288, 12288]}}  # fmt: skip
        response = stack.client.post("/v1/jobs", json=job_request(teacher, train, student=huge))
        assert response.status_code == 201, response.text
        job = stack.client.wait_for_job(response.json()["id"], timeout=120)

        assert job["status"] == "failed", stack.logs()
        assert job["error"]["code"] == "out_of_memory"
        assert (
            "the kernel killed its training process (this worker's memory limit is 1 GiB)"
            in job["error"]["message"]
        )
        assert "training.batch_size" in job["error"]["message"]
        messages = stack.client.event_messages(job["id"])
        assert sum("A worker picked up the job" in m for m in messages) == 1, messages
        assert not any(m.startswith("Re-queued") for m in messages)

        after = stack.client.post("/v1/jobs", json=job_request(teacher, train)).json()["id"]
        assert stack.client.wait_for_job(after, timeout=120)["status"] == "succeeded", stack.logs()
