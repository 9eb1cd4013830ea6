"""Jobs whose worker died are re-queued, or failed after too many tries: found by the reaper when their
heartbeat stops, told by the worker when the child running them dies."""

import dataclasses
import time

import pytest
from sqlalchemy import select

from core.checkpoint_store import StoredCheckpoint
from core.models import Job
from engine.pipeline import DistillResult
from engine.plan.errors import JobCancelled
from tests.job_rows import job_state, set_job
from tests.service.helpers import job_request
from worker.liveness import reap_lost_jobs, taken_from_queue, training_process_lost
from worker.tasks import _finish

# What the engine reports of a finished job, as the model card reads it.
METRICS = {"teacher": {"accuracy": 1.0, "parameters": 100}, "student": {"accuracy": 0.9, "parameters": 10},
           "agreement": 0.9, "accuracy_retention": 0.9, "compression": 10.0}  # fmt: skip


@pytest.fixture
def reaper(resources):
    """The resources a reaper runs with: a 10 s heartbeat timeout, 3 attempts."""
    settings = resources.settings.model_copy(update={"heartbeat_timeout_seconds": 10.0, "max_attempts": 3})
    return dataclasses.replace(resources, settings=settings)


@pytest.fixture
def job_id(client, teacher_file, dataset_file) -> str:
    response = client.post("/v1/jobs", json=job_request(teacher_file["id"], dataset_file["id"]))
    return response.json()["id"]


def test_a_silent_running_job_is_requeued(reaper, job_id):
    set_job(reaper.database, job_id, status="running", attempts=1, heartbeat_at=time.time() - 60)
    assert job_id in reap_lost_jobs(reaper)
    status, error, events = job_state(reaper.database, job_id)
    assert status == "queued" and error is None
    assert "It will run again (attempt 2)" in events[-1]
    assert job_id not in reap_lost_jobs(reaper)  # queued jobs are not reaped again


def test_a_job_with_a_recent_heartbeat_is_left_alone(reaper, job_id):
    set_job(reaper.database, job_id, status="running", attempts=1, heartbeat_at=time.time() - 2)
    assert job_id not in reap_lost_jobs(reaper)
    assert job_state(reaper.database, job_id)[0] == "running"


def test_a_job_that_keeps_losing_workers_fails(reaper, job_id):
    set_job(reaper.database, job_id, status="validating", attempts=3, heartbeat_at=time.time() - 60)
    assert job_id not in reap_lost_jobs(reaper)
    status, error, _ = job_state(reaper.database, job_id)
    assert status == "failed" and error["code"] == "worker_lost" and "3 times" in error["message"]


def test_a_silent_cancelling_job_ends_cancelled(reaper, job_id):
    set_job(reaper.database, job_id, status="cancelling", attempts=1, heartbeat_at=time.time() - 60)
    reap_lost_jobs(reaper)
    assert job_state(reaper.database, job_id)[0] == "cancelled"


def queued_messages(resources) -> int:
    return len(list((resources.settings.broker_folder / "queue").glob("*")))


def test_a_job_whose_training_process_died_is_requeued_at_once(reaper, job_id):
    set_job(reaper.database, job_id, status="running", attempts=1, heartbeat_at=time.time())
    before = queued_messages(reaper)
    training_process_lost(reaper, job_id, "signal 9 (SIGKILL)", out_of_memory=False)
    status, error, events = job_state(reaper.database, job_id)
    assert status == "queued" and error is None
    assert events[-1].startswith("Re-queued: its training process died with signal 9 (SIGKILL).")
    assert queued_messages(reaper) == before + 1


def test_a_job_killed_for_memory_fails_on_its_first_try_and_keeps_no_checkpoint(reaper, job_id, tmp_path):
    set_job(reaper.database, job_id, status="running", attempts=1, heartbeat_at=time.time())
    checkpoint = StoredCheckpoint(reaper.storage, "default", job_id)
    (tmp_path / "saved.pt").write_bytes(b"state")
    checkpoint.save(tmp_path / "saved.pt")
    training_process_lost(reaper, job_id, "signal 9 (SIGKILL)", out_of_memory=True)
    status, error, events = job_state(reaper.database, job_id)
    assert status == "failed" and error["code"] == "out_of_memory"
    assert (
        "the kernel killed its training process" in error["message"]
        and "training.batch_size" in error["message"]
    )
    assert not checkpoint.fetch(tmp_path / "fetched.pt")


def test_a_child_that_died_before_claiming_its_job_leaves_it_queued_again(reaper, job_id):
    """Its task message was acknowledged with it: the job is sent again, not left queued forever."""
    before = queued_messages(reaper)
    training_process_lost(reaper, job_id, "exitcode 1", out_of_memory=False)
    assert job_state(reaper.database, job_id)[0] == "queued"
    assert queued_messages(reaper) == before + 1


def test_a_queued_job_whose_worker_went_silent_before_starting_it_is_sent_again(reaper, job_id):
    """The worker took its message and died: the broker will not deliver it again (soon)."""
    assert job_id not in reap_lost_jobs(reaper)  # waiting in the queue: nobody took it
    taken_from_queue(reaper.database, job_id)
    assert job_id not in reap_lost_jobs(reaper)  # the worker is starting it
    set_job(reaper.database, job_id, heartbeat_at=time.time() - 60)
    before = queued_messages(reaper)
    assert job_id in reap_lost_jobs(reaper)
    status, _error, events = job_state(reaper.database, job_id)
    assert status == "queued" and events[-1].startswith(
        "Sent to the queue again: its worker stopped answering"
    )
    assert queued_messages(reaper) == before + 1
    assert job_id not in reap_lost_jobs(reaper)  # once


def test_a_child_that_died_after_its_job_ended_changes_nothing(reaper, job_id):
    set_job(reaper.database, job_id, status="succeeded", attempts=1)
    training_process_lost(reaper, job_id, "signal 11 (SIGSEGV)", out_of_memory=True)
    assert job_state(reaper.database, job_id)[:2] == ("succeeded", None)


def test_a_lost_attempt_finishing_late_leaves_the_new_attempts_artifacts_alone(
    client, resources, job_id, tmp_path
):
    """Attempt 1 was only slow: it finishes after attempt 2 took the job over and succeeded."""

    def attempt(number: int) -> Job:
        with resources.database.transaction() as session:
            job = session.scalar(select(Job).where(Job.id == job_id))
        job.attempts = number  # detached: what that attempt's worker holds in memory
        return job

    def result(content: bytes) -> DistillResult:
        (tmp_path / "student.json").write_bytes(content)
        return DistillResult(
            metrics=METRICS, series=[], artifacts={"student.json": tmp_path / "student.json"}
        )

    set_job(resources.database, job_id, status="running", attempts=2, heartbeat_at=time.time())
    _finish(resources, attempt(2), [], result(b'{"attempt": 2}'))
    with pytest.raises(JobCancelled):  # fenced off: the job is no longer its to finish
        _finish(resources, attempt(1), [], result(b'{"attempt": 1}'))
    assert job_state(resources.database, job_id)[0] == "succeeded"
    assert client.get(f"/v1/jobs/{job_id}/artifacts/student.json").content == b'{"attempt": 2}'
