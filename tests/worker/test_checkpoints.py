"""A job's checkpoint lives in the storage while the job may still resume from it, and no longer:
whoever ends the job (the API's cancel, the reaper, the worker) deletes it. The worker's reporter
forgets the metrics a lost attempt reported after its checkpoint; a checkpoint the job cannot resume
from ends it `failed`, saying what to do."""

import dataclasses
import time

import pytest
import torch
from sqlalchemy import select

from core.checkpoint_store import StoredCheckpoint
from core.job_request import JobCreate, engine_job
from core.models import Job, JobMetric
from engine.train.checkpoint_layouts import LAYOUT
from engine.train.checkpoints import fingerprint
from tests.job_rows import job_state, set_job
from tests.service.helpers import job_request, mlp_spec
from worker.liveness import reap_lost_jobs
from worker.reporter import DatabaseReporter
from worker.tasks import run_job


@pytest.fixture
def checkpointed_job(resources, queued_job, tmp_path) -> StoredCheckpoint:
    """The queued job with a checkpoint saved, as a worker that lost it would have left."""
    saved = tmp_path / "saved.pt"
    saved.write_bytes(b"training state")
    checkpoint = StoredCheckpoint(resources.storage, "default", queued_job["id"])
    checkpoint.save(saved)
    return checkpoint


def test_a_checkpoint_is_fetched_as_saved(checkpointed_job, tmp_path):
    assert checkpointed_job.fetch(tmp_path / "fetched.pt")
    assert (tmp_path / "fetched.pt").read_bytes() == b"training state"
    checkpointed_job.delete()
    assert not checkpointed_job.fetch(tmp_path / "again.pt")


def test_a_resuming_job_fetches_the_earlier_checkpoint_until_its_first_save_takes_it_over(
    resources, queued_job, checkpointed_job, tmp_path
):
    resuming = StoredCheckpoint(resources.storage, "default", "job-resuming", resumes=queued_job["id"])
    assert resuming.fetch(tmp_path / "fetched.pt")
    assert (tmp_path / "fetched.pt").read_bytes() == b"training state"

    (tmp_path / "own.pt").write_bytes(b"further on")
    resuming.save(tmp_path / "own.pt")
    assert not checkpointed_job.kept() and resuming.kept()
    assert resuming.fetch(tmp_path / "again.pt")
    assert (tmp_path / "again.pt").read_bytes() == b"further on"


def test_cancelling_a_requeued_job_deletes_its_checkpoint(client, queued_job, checkpointed_job, tmp_path):
    assert client.post(f"/v1/jobs/{queued_job['id']}/cancel").json()["status"] == "cancelled"
    assert not checkpointed_job.fetch(tmp_path / "fetched.pt")


@pytest.mark.parametrize("status, attempts, ends", [("running", 3, "failed"), ("cancelling", 1, "cancelled")])
def test_a_lost_job_that_ends_loses_its_checkpoint(
    resources, queued_job, checkpointed_job, tmp_path, status, attempts, ends
):
    set_job(resources.database, queued_job["id"], status=status, attempts=attempts,
            heartbeat_at=time.time() - 3600)  # fmt: skip
    settings = resources.settings.model_copy(update={"max_attempts": 3})
    reap_lost_jobs(dataclasses.replace(resources, settings=settings))
    assert job_state(resources.database, queued_job["id"])[0] == ends
    assert not checkpointed_job.fetch(tmp_path / "fetched.pt")


def test_a_requeued_job_keeps_its_checkpoint(resources, queued_job, checkpointed_job, tmp_path):
    set_job(resources.database, queued_job["id"], status="running", attempts=1,
            heartbeat_at=time.time() - 3600)  # fmt: skip
    assert queued_job["id"] in reap_lost_jobs(resources)
    assert checkpointed_job.fetch(tmp_path / "fetched.pt")


def test_rewinding_forgets_the_metrics_after_the_checkpoint(client, resources, queued_job):
    database = resources.database
    with database.transaction() as session:
        pk = session.scalar(select(Job.pk).where(Job.id == queued_job["id"]))
    reporter = DatabaseReporter(database, queued_job["id"], pk, progress_interval=0.0, cancel_interval=0.0)
    for epoch in (1, 2, 3):
        reporter.metrics(epoch, 10 * epoch, {"loss": 1.0 / epoch, "validation_accuracy": 0.5})
    reporter.rewind(25)  # the checkpoint was saved in epoch 3, before its metrics
    series = client.get(f"/v1/jobs/{queued_job['id']}/metrics").json()["data"]
    assert sorted((p["epoch"], p["name"]) for p in series) == [
        (1, "loss"), (1, "validation_accuracy"), (2, "loss"), (2, "validation_accuracy")
    ]  # fmt: skip
    reporter.metrics(3, 30, {"loss": 0.3, "validation_accuracy": 0.6})  # the resumed attempt's epoch 3
    with database.transaction() as session:
        steps = session.scalars(select(JobMetric.step).where(JobMetric.job_pk == pk)).all()
    assert sorted(steps) == [10, 10, 20, 20, 30, 30]


def test_a_checkpoint_the_job_cannot_resume_from_fails_it_saying_what_to_do(
    client, resources, teacher_file, dataset_file, tmp_path
):
    teacher = {"file_id": teacher_file["id"], "architecture": mlp_spec()}  # the file's
    created = client.post(
        "/v1/jobs", json=job_request(teacher_file["id"], dataset_file["id"], teacher=teacher)
    )
    job_id = created.json()["id"]
    with resources.database.transaction() as session:
        request = session.scalar(select(Job.request).where(Job.id == job_id))
    job = engine_job(JobCreate.model_validate(request))
    saved = tmp_path / "saved.pt"
    unfit = {"learners": []}  # the job's run has one
    torch.save(
        {
            "layout": LAYOUT,
            "fingerprint": fingerprint(job),
            "epoch": 1,
            "step": 3,
            "finished": [],
            "live": unfit,
            "rng": {},
            "kept": {},
        },
        saved,
    )
    checkpoint = StoredCheckpoint(resources.storage, "default", job_id)
    checkpoint.save(saved)
    run_job(resources, job_id)
    status, error, events = job_state(resources.database, job_id)
    assert status == "failed" and error["code"] == "checkpoint_unusable"
    assert "ValueError: zip()" in error["message"]  # the learners' states, one short
    assert error["message"].endswith("submit the job again to train it from the start")
    assert events[-1].startswith("Job failed (checkpoint_unusable)")
    assert not checkpoint.fetch(tmp_path / "fetched.pt")
