"""The whole product path: real API process, real Celery worker process, real files.

A user uploads a teacher they trained and a dataset, submits a job, polls it, downloads
`student.pt2` and measures it with plain PyTorch: the accuracy must be what the job reported.
"""

import hashlib
import io
import json

import pytest
import torch
from safetensors.torch import load

from engine.models.registry import build_model
from engine.plan.specs import MLPSpec
from tests.e2e.conftest import job_request
from tests.factories import accuracy
from tests.stack import ServiceStack
from tests.storages import stored_keys

pytestmark = pytest.mark.e2e


def distill_and_check(stack: ServiceStack, task) -> dict:
    teacher = stack.client.upload(task.teacher, "teacher")
    train = stack.client.upload(task.train, "dataset")
    validation = stack.client.upload(task.validation, "dataset")
    created = stack.client.post("/v1/jobs", json=job_request(teacher["id"], train["id"], validation["id"]))
    assert created.status_code == 201, created.text
    job = stack.client.wait_for_job(created.json()["id"])
    assert job["status"] == "succeeded", f"{job['error']}\n{stack.logs()}"

    assert job["progress"]["step"] == job["progress"]["total_steps"] > 0
    assert job["progress"]["fraction"] == 1.0
    assert job["started_at"] >= job["created_at"] and job["finished_at"] >= job["started_at"]
    assert {a["name"] for a in job["artifacts"]} >= {
        "student.safetensors", "student.json", "student.pt2", "metrics.json"
    }  # fmt: skip

    metrics = job["metrics"]
    assert metrics["teacher"]["accuracy"] > 0.9
    assert metrics["student"]["accuracy"] > 0.85
    assert metrics["compression"] == pytest.approx(
        metrics["teacher"]["parameters"] / metrics["student"]["parameters"]
    )

    artifacts = {a["name"]: a for a in stack.client.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"]}
    downloads = {}
    for name, artifact in artifacts.items():
        response = stack.client.get(f"/v1/jobs/{job['id']}/artifacts/{name}")
        assert response.status_code == 200
        assert response.headers["etag"] == f'"{artifact["sha256"]}"'
        assert hashlib.sha256(response.content).hexdigest() == artifact["sha256"]
        assert len(response.content) == artifact["bytes"] == int(response.headers["content-length"])
        downloads[name] = response.content

    # Measured outside the service, with plain PyTorch only.
    program = torch.export.load(io.BytesIO(downloads["student.pt2"]))
    with torch.no_grad():
        logits = program.module()(torch.from_numpy(task.x_val))
    assert accuracy(logits, task.y_val) == pytest.approx(metrics["student"]["accuracy"], abs=1e-6)

    # student.json + student.safetensors rebuild the same model with the project's code.
    rebuilt = build_model(MLPSpec.model_validate(json.loads(downloads["student.json"])))
    rebuilt.load_state_dict(load(downloads["student.safetensors"]))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(torch.from_numpy(task.x_val)), logits)

    report = json.loads(downloads["metrics.json"])
    assert report["final"]["student"]["accuracy"] == pytest.approx(metrics["student"]["accuracy"])

    series = stack.client.get(f"/v1/jobs/{job['id']}/metrics").json()["data"]
    losses = [point["value"] for point in series if point["name"] == "loss"]
    assert len(losses) == job["request"]["training"]["epochs"] and losses[-1] < losses[0]
    assert {"soft_loss", "hard_loss", "validation_accuracy"} <= {point["name"] for point in series}

    events = [e["message"] for e in stack.client.get(f"/v1/jobs/{job['id']}/events").json()["data"]]
    assert any("validating" in e for e in events) and any("running" in e for e in events)
    assert "succeeded" in events[-1]
    check_teacher_cache(stack, job, artifacts, train["id"])
    return job


def check_teacher_cache(stack: ServiceStack, job: dict, artifacts: dict, train_id: str) -> None:
    """The job kept its teacher's outputs in the storage: the same job again reads them and trains the very
    same student; deleting the dataset deletes them."""
    assert job["metrics"]["teacher_cache"]["status"] == "miss"
    assert len(cache_folders(stack)) == 2  # the teacher over the training and the validation set

    again = stack.client.wait_for_job(stack.client.submit(job["request"])["id"])
    assert again["status"] == "succeeded", f"{again['error']}\n{stack.logs()}"
    assert again["metrics"]["teacher_cache"]["status"] == "hit"
    events = [e["message"] for e in stack.client.get(f"/v1/jobs/{again['id']}/events").json()["data"]]
    assert any(
        e.startswith("Teacher outputs over the 1,200 training samples: read from the cache") for e in events
    )
    sha256 = {a["name"]: a["sha256"] for a in again["artifacts"]}
    assert sha256["student.safetensors"] == artifacts["student.safetensors"]["sha256"]

    assert stack.client.delete(f"/v1/files/{train_id}").status_code == 200
    assert cache_folders(stack) == set()


def cache_folders(stack: ServiceStack) -> set[str]:
    """The folders of the teacher outputs kept for the default tenant."""
    kept = [key.split("/") for key in stored_keys(stack.storage)]
    return {parts[2] for parts in kept if parts[:2] == ["caches", "default"]}


def test_embedded_sqlite_and_filesystem_broker(stack, task):
    distill_and_check(stack, task)


@pytest.mark.postgres
@pytest.mark.redis
def test_scaled_out_postgres_and_redis(tmp_path, postgres_url, redis_broker_url, task):
    with ServiceStack(tmp_path, database_url=postgres_url, broker_url=redis_broker_url) as stack:
        job = distill_and_check(stack, task)
        assert job["metrics"]["student"]["accuracy"] > 0.85


@pytest.mark.s3
def test_s3_storage(tmp_path, s3_url, task):
    """Files, artifacts, checkpoints and the teacher cache in a bucket: nothing under the home's storage."""
    with ServiceStack(tmp_path, storage_url=s3_url) as stack:
        distill_and_check(stack, task)
    assert not (tmp_path / "storage").exists()


@pytest.mark.rabbitmq
def test_rabbitmq_broker(tmp_path, rabbitmq, task):
    broker_url, queue = rabbitmq
    with ServiceStack(tmp_path, broker_url=broker_url, queue=queue) as stack:
        distill_and_check(stack, task)
