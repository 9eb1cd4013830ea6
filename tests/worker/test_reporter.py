"""The progress a job reports: an ETA only once it can be estimated, from the rate after the first step."""

from sqlalchemy import select

from core.models import Job
from tests.job_rows import set_job
from worker import reporter as reporter_module
from worker.reporter import DatabaseReporter


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def eta_after(reporter, clock, database, job_id, at: float, step: int) -> float | None:
    clock.now = at
    reporter.progress(epoch=1, epochs=1, step=step, total_steps=100)
    with database.transaction() as session:
        return session.scalar(select(Job.progress).where(Job.id == job_id))["eta_seconds"]


def test_the_eta_waits_for_a_rate_and_leaves_the_first_steps_warm_up_out(resources, queued_job, monkeypatch):
    database, job_id = resources.database, queued_job["id"]
    set_job(database, job_id, status="validating", attempts=1)
    with database.transaction() as session:
        pk = session.scalar(select(Job.pk).where(Job.id == job_id))
    clock = Clock()
    monkeypatch.setattr(reporter_module.time, "monotonic", clock)
    reporter = DatabaseReporter(database, job_id, pk, progress_interval=0.0, cancel_interval=0.0)
    reporter.phase("running")
    assert eta_after(reporter, clock, database, job_id, at=1030.0, step=1) is None  # a 30 s first step
    assert eta_after(reporter, clock, database, job_id, at=1030.2, step=3) is None  # too few steps yet
    assert (
        eta_after(reporter, clock, database, job_id, at=1031.5, step=4) == 48.0
    )  # 0.5 s a step since step 1
    reporter.rewind(2)  # a resumed attempt measures its own rate
    assert eta_after(reporter, clock, database, job_id, at=1040.0, step=5) is None


def test_a_late_progress_write_leaves_a_job_that_has_ended_as_it_ended(resources, queued_job):
    database, job_id = resources.database, queued_job["id"]
    set_job(database, job_id, status="succeeded", progress={"step": 10, "total_steps": 10})
    with database.transaction() as session:
        pk = session.scalar(select(Job.pk).where(Job.id == job_id))
    reporter = DatabaseReporter(database, job_id, pk, progress_interval=0.0, cancel_interval=0.0)
    reporter.progress(epoch=1, epochs=2, step=5, total_steps=10)  # a slow worker whose attempt was replaced
    with database.transaction() as session:
        assert session.scalar(select(Job.progress).where(Job.id == job_id)) == {"step": 10, "total_steps": 10}
