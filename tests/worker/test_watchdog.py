"""A job that must stop is stopped even where its step never returns: past the grace period after a
cancel, or after its deadline, the watchdog ends the job itself and then its process; a job that stops
(or ends) on its own is left alone, and the worker's handler of the dead child changes nothing after."""

import dataclasses
import threading
import time

import pytest
from sqlalchemy import select

from core.checkpoint_store import StoredCheckpoint
from core.models import Job
from tests.job_rows import job_state, set_job
from tests.service.helpers import job_request
from worker.liveness import training_process_lost
from worker.watchdog import Overdue, Watchdog, watchdog

GRACE = 10.0
PROGRESS = {"epoch": 2, "epochs": 4, "step": 30, "total_steps": 60, "fraction": 0.5, "eta_seconds": None}


@pytest.mark.parametrize("status", ["validating", "running"])
def test_a_live_job_is_overdue_only_the_grace_period_after_its_deadline(status):
    dog = Watchdog(deadline=100.0, grace=GRACE)
    assert dog.overdue(status, now=100.0) is None  # the loop stops itself at its next step
    assert dog.overdue(status, now=109.9) is None
    assert dog.overdue(status, now=110.0) is Overdue.TIME_LIMIT


def test_a_cancel_is_overdue_the_grace_period_after_the_watchdog_first_saw_it():
    dog = Watchdog(deadline=1_000.0, grace=GRACE)
    assert dog.overdue("running", now=5.0) is None
    assert dog.overdue("cancelling", now=6.0) is None
    assert dog.overdue("cancelling", now=15.9) is None
    assert dog.overdue("cancelling", now=16.0) is Overdue.CANCEL
    assert Watchdog(deadline=0.0, grace=GRACE).overdue("cancelling", now=50.0) is None  # a cancel, not late


@pytest.mark.parametrize("status", ["queued", "succeeded", "failed", "cancelled", None])
def test_a_job_no_longer_live_is_never_this_process_to_end(status):
    assert Watchdog(deadline=0.0, grace=GRACE).overdue(status, now=1e9) is None


@pytest.fixture
def watched(resources):
    """The resources a watchdog runs with: a grace period of a tenth of a second."""
    return dataclasses.replace(
        resources, settings=resources.settings.model_copy(update={"stop_grace_seconds": 0.1})
    )


@pytest.fixture
def job(client, watched, teacher_file, dataset_file) -> Job:
    job_id = client.post("/v1/jobs", json=job_request(teacher_file["id"], dataset_file["id"])).json()["id"]
    set_job(watched.database, job_id, status="running", attempts=1, progress=PROGRESS)
    with watched.database.transaction() as session:
        return session.scalar(select(Job).where(Job.id == job_id))


def saved_checkpoint(resources, job: Job, folder) -> StoredCheckpoint:
    checkpoint = StoredCheckpoint(resources.storage, job.tenant_id, job.id)
    (folder / "saved.pt").write_bytes(b"state")
    checkpoint.save(folder / "saved.pt")
    return checkpoint


def watch(resources, job: Job, deadline: float, while_watching=lambda: None, seconds: float = 5) -> bool:
    """Whether the watchdog ended the job's process within `seconds`."""
    ended = threading.Event()
    with watchdog(resources, job, deadline, end_process=ended.set):
        while_watching()
        ended.wait(seconds)
    return ended.is_set()


def test_a_job_stuck_past_its_deadline_fails_saying_how_far_it_got_and_keeps_its_checkpoint(
    watched, job, tmp_path
):
    checkpoint = saved_checkpoint(watched, job, tmp_path)
    assert watch(watched, job, deadline=time.time())
    status, error, events = job_state(watched.database, job.id)
    assert status == "failed" and error["code"] == "time_limit_exceeded"
    assert "at step 30 of 60, epoch 2 of 4" in error["message"] and "training.max_seconds" in error["message"]
    assert events[-1] == f"Job failed (time_limit_exceeded): {error['message']}"
    assert checkpoint.fetch(tmp_path / "kept.pt")

    training_process_lost(watched, job.id, "signal 9 (SIGKILL)", out_of_memory=False)  # the worker hears
    assert job_state(watched.database, job.id)[:2] == (status, error)  # and requeues nothing


def test_a_cancel_a_stuck_job_does_not_heed_ends_it_cancelled_without_its_checkpoint(watched, job, tmp_path):
    checkpoint = saved_checkpoint(watched, job, tmp_path)
    set_job(watched.database, job.id, status="cancelling")
    assert watch(watched, job, deadline=time.time() + 3600)
    status, error, events = job_state(watched.database, job.id)
    assert status == "cancelled" and error is None
    assert events[-1].startswith("Job cancelled: its training did not stop within 0.1 s of a cancel")
    assert not checkpoint.fetch(tmp_path / "fetched.pt")


def test_a_job_that_stops_on_its_own_is_left_to_end_itself(watched, job):
    assert not watch(watched, job, deadline=time.time() + 3600, seconds=1.5)  # within its bound

    def succeed():
        set_job(watched.database, job.id, status="succeeded")

    assert not watch(watched, job, deadline=time.time(), while_watching=succeed, seconds=1.5)
    assert job_state(watched.database, job.id)[0] == "succeeded"
