"""What the job and file reads answer: the stored values under the schema, byte for byte as FastAPI
encodes a route's `response_model` (the read routes encode their bodies themselves)."""

import json

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from core.models import Artifact, Job
from service import file_reads
from service.kept_bodies import KeptBodies
from service.schemas import FileObject, JobMetrics, JobObject, Page
from tests.service.helpers import job_request

METRICS = {
    "teacher": {"accuracy": 0.95, "parameters": 2_395_210, "latency_ms": {"batch_1": 0.49, "batch_64": 0.05}},
    "student": {"accuracy": 1, "parameters": 101_770, "latency_ms": {"batch_1": 0.0917, "batch_64": 0.0032}},
    "agreement": 0.9391, "accuracy_retention": None, "compression": 24,  # ints where floats are declared
    "onnx": {"accuracy": 0.916, "agreement": 1.0, "max_abs_difference": 2.86e-06, "bytes": 206_117},
    "speedup": {"batch_1": 5.37, "batch_64": 14.8}, "latency_device": "cpu",
    "gates": [{"metric": "accuracy_retention", "op": ">=", "threshold": 0.9, "value": None, "passed": False}],
}  # fmt: skip
ARTIFACTS = [("student.pt2", 231_906), ("README.md", 3_104), ("metrics.json", 18_350)]  # stored in this order


def as_fastapi_encodes(response_model, value) -> bytes:
    """`value` as FastAPI answers it from a route declaring `response_model` (as the routes did)."""
    app = FastAPI()
    app.get("/", response_model=response_model)(lambda: value)
    with TestClient(app) as client:
        return client.get("/").content


def end_job(resources, job_id: str, status: str, artifacts=(), **values) -> None:
    """Leave the job as a worker does when it ends: its status and values, its artifacts."""
    with resources.database.transaction() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status, finished_at=1, **values))
        job_pk = session.scalar(select(Job.pk).where(Job.id == job_id))
        session.add_all(Artifact(job_pk=job_pk, name=name, bytes=size, sha256=name.ljust(64, "0"),
                                 content_type="application/zip", storage_key=f"jobs/{job_id}/{name}")
                        for name, size in artifacts)  # fmt: skip


def submit(client, teacher_file, dataset_file) -> dict:
    response = client.post("/v1/jobs", json=job_request(teacher_file["id"], dataset_file["id"]))
    assert response.status_code == 201, response.text
    return response.json()


def test_a_succeeded_job_reads_as_stored(client, resources, queued_job):
    end_job(resources, queued_job["id"], "succeeded", ARTIFACTS, started_at=1, metrics=METRICS,
            progress={"epoch": 10, "epochs": 10, "step": 40, "total_steps": 40, "fraction": 1})  # fmt: skip
    body = client.get(f"/v1/jobs/{queued_job['id']}").content
    job = json.loads(body)
    assert job["metrics"] == JobMetrics.model_validate(METRICS).model_dump(mode="json")
    assert job["metrics"]["compression"] == 24.0 and job["metrics"]["student"]["accuracy"] == 1.0
    assert job["artifacts"] == [{"name": name, "bytes": size, "sha256": name.ljust(64, "0")}
                                for name, size in ARTIFACTS]  # fmt: skip
    assert job["progress"]["fraction"] == 1.0 and job["progress"]["eta_seconds"] is None
    assert {key: job[key] for key in ("status", "started_at", "finished_at", "error")} == {
        "status": "succeeded", "started_at": 1, "finished_at": 1, "error": None}  # fmt: skip
    assert job["request"] == queued_job["request"]
    assert body == as_fastapi_encodes(JobObject, JobObject.model_validate(job))


def test_a_causal_language_models_metrics_read_whole(client, resources, queued_job):
    metrics = METRICS | {
        "task": "causal-lm",
        "teacher": METRICS["teacher"] | {"perplexity": 12.3},
        "student": METRICS["student"] | {"perplexity": 15},
        "kl_to_teacher": 0.31,
        "tokens": 12_345,
        "samples": [{"prompt": "To be", "teacher": ", or not", "student": " or not"}],
    }
    end_job(resources, queued_job["id"], "succeeded", metrics=metrics)
    read = client.get(f"/v1/jobs/{queued_job['id']}").json()["metrics"]
    assert (read["task"], read["kl_to_teacher"], read["tokens"]) == ("causal-lm", 0.31, 12_345)
    assert (read["teacher"]["perplexity"], read["student"]["perplexity"]) == (12.3, 15.0)
    assert read["samples"] == metrics["samples"]


def test_a_failed_job_reads_with_its_error(client, resources, queued_job):
    error = {"code": "loss_diverged", "message": "The loss became NaN at epoch 3: lower the temperature."}
    end_job(resources, queued_job["id"], "failed", error=error)
    body = client.get(f"/v1/jobs/{queued_job['id']}").content
    job = json.loads(body)
    assert job["error"] == error and job["metrics"] is None and job["artifacts"] == []
    assert body == as_fastapi_encodes(JobObject, JobObject.model_validate(job))


def test_a_list_page_is_its_jobs_as_read_one_by_one(client, resources, teacher_file, dataset_file):
    jobs = [submit(client, teacher_file, dataset_file) for _ in range(3)]
    end_job(resources, jobs[0]["id"], "succeeded", ARTIFACTS[:1], metrics=METRICS)
    end_job(resources, jobs[1]["id"], "failed", error={"code": "internal_error", "message": "Boom."})
    page = client.get("/v1/jobs", params={"limit": 2})
    newest = [client.get(f"/v1/jobs/{job['id']}").json() for job in reversed(jobs[1:])]
    assert page.json() == {"object": "list", "data": newest, "has_more": True}
    assert page.content == as_fastapi_encodes(Page[JobObject], Page[JobObject](data=newest, has_more=True))

    rest = client.get("/v1/jobs", params={"limit": 1, "after": jobs[1]["id"]}).json()
    assert rest["data"] == [client.get(f"/v1/jobs/{jobs[0]['id']}").json()]


def test_a_job_reads_as_it_is_now_after_each_change(client, resources, queued_job):
    job_id = queued_job["id"]
    assert client.get(f"/v1/jobs/{job_id}").json() == queued_job
    running = {"epoch": 1, "epochs": 10, "step": 4, "total_steps": 40, "fraction": 0.1, "eta_seconds": 9.5}
    with resources.database.transaction() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="running", progress=running))
    assert client.get(f"/v1/jobs/{job_id}").json()["progress"] == running
    end_job(resources, job_id, "succeeded", ARTIFACTS[:1], metrics=METRICS)
    ended = client.get(f"/v1/jobs/{job_id}").json()
    assert ended["status"] == "succeeded" and ended["metrics"] and len(ended["artifacts"]) == 1
    late = {**running, "step": 5}  # a slow worker's last progress write, after the job ended
    with resources.database.transaction() as session:
        session.execute(update(Job).where(Job.id == job_id).values(progress=late))
    assert client.get(f"/v1/jobs/{job_id}").json()["progress"] == late
    listed = {job["id"]: job for job in client.get("/v1/jobs").json()["data"]}
    assert listed[job_id]["progress"] == late


def test_a_job_reads_with_the_error_of_a_lost_attempt_while_it_runs_again(client, resources, queued_job):
    job_id, lost = queued_job["id"], {"code": "worker_lost", "message": "Re-queued: its worker was lost."}
    for values in ({"status": "running", "started_at": 5}, {"status": "queued", "error": lost},
                   {"status": "running", "started_at": 5}):  # fmt: skip
        with resources.database.transaction() as session:
            session.execute(update(Job).where(Job.id == job_id).values(**values))
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert {key: job[key] for key in values} == values
    assert job["error"] == lost


def test_a_last_page(client):
    page = client.get("/v1/jobs", params={"status": "cancelling"})  # none, or a few
    assert page.json()["has_more"] is False
    assert page.content == as_fastapi_encodes(Page[JobObject], Page[JobObject].model_validate(page.json()))


def test_the_files_list_is_its_files_as_read_one_by_one(client, teacher_file, dataset_file):
    page = client.get("/v1/files", params={"limit": 2})
    files = [client.get(f"/v1/files/{file['id']}") for file in (dataset_file, teacher_file)]
    assert [file.json() for file in files] == [dataset_file, teacher_file]
    assert files[0].content == as_fastapi_encodes(FileObject, FileObject.model_validate(dataset_file))
    assert page.json() == {"object": "list", "data": [dataset_file, teacher_file], "has_more": True}
    expected = Page[FileObject](data=[dataset_file, teacher_file], has_more=True)
    assert page.content == as_fastapi_encodes(Page[FileObject], expected)
    teachers = client.get("/v1/files", params={"purpose": "teacher", "limit": 1}).json()
    assert teachers["data"] == [teacher_file]


def test_a_deleted_file_is_read_no_more(client, dataset_file):
    assert client.get(f"/v1/files/{dataset_file['id']}").json() == dataset_file
    assert client.get("/v1/files", params={"limit": 1}).json()["data"] == [dataset_file]
    assert client.delete(f"/v1/files/{dataset_file['id']}").status_code == 200
    assert client.get(f"/v1/files/{dataset_file['id']}").status_code == 404
    listed = client.get("/v1/files", params={"limit": 100}).json()["data"]
    assert dataset_file["id"] not in {file["id"] for file in listed}


def test_a_file_deleted_after_its_id_was_read_is_left_out(resources, dataset_file):
    """A page reads its files' ids, then the bodies it has not kept: a file deleted in between is gone."""
    with resources.database.reader.connect() as connection:
        bodies = file_reads.file_bodies(connection, ["file-deleted", dataset_file["id"]], KeptBodies())
    assert [json.loads(body) for body in bodies] == [dataset_file]
