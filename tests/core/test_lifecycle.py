"""The job lifecycle's table, walked: each named transition moves a job from each of its sources to its
target, and is refused (nothing written) from every other status; on SQLite and PostgreSQL."""

import itertools

import pytest
from sqlalchemy import select

from core import lifecycle
from core.db import Database
from core.models import Job
from tests.job_rows import set_job


@pytest.fixture
def job_id(database) -> str:
    with database.transaction() as session:
        job = Job(request={}, progress={}, attempts=1)
        session.add(job)
        session.flush()
        return job.id


def row(database: Database, job_id: str) -> Job:
    with database.transaction() as session:
        return session.scalar(select(Job).where(Job.id == job_id))


def test_the_groups_cover_every_status_once():
    assert lifecycle.UNFINISHED | lifecycle.TERMINAL == set(lifecycle.STATUSES)
    assert not lifecycle.UNFINISHED & lifecycle.TERMINAL
    assert lifecycle.LIVE < lifecycle.UNFINISHED and lifecycle.CANCELLABLE < lifecycle.UNFINISHED
    for transition in lifecycle.TRANSITIONS:
        assert transition.sources <= lifecycle.UNFINISHED, f"{transition.name} leaves a finished job"
        assert transition.target not in transition.sources


@pytest.mark.parametrize(
    ("transition", "status"),
    list(itertools.product(lifecycle.TRANSITIONS, lifecycle.STATUSES)),
    ids=lambda value: value.name.replace(" ", "_") if isinstance(value, lifecycle.Transition) else value,
)
def test_each_transition_moves_from_its_sources_only(database, job_id, transition, status):
    set_job(database, job_id, status=status, finished_at=None)
    with database.transaction() as session:
        moved = lifecycle.move(session, job_id, transition)
    job = row(database, job_id)
    if status in transition.sources:
        assert moved and job.status == transition.target
        assert (job.finished_at is not None) == (transition.target in lifecycle.TERMINAL)
    else:
        assert not moved and job.status == status and job.finished_at is None


def test_a_move_writes_its_fields_with_the_status(database, job_id):
    set_job(database, job_id, status="queued")
    with database.transaction() as session:
        assert lifecycle.move(session, job_id, lifecycle.CLAIM, attempts=Job.attempts + 1, started_at=7)
    job = row(database, job_id)
    assert (job.status, job.attempts, job.started_at) == ("validating", 2, 7)


def test_a_later_attempt_fences_off_an_earlier_one(database, job_id):
    set_job(database, job_id, status="running", attempts=2)
    with database.transaction() as session:
        assert not lifecycle.move(session, job_id, lifecycle.SUCCEED, attempt=1)
        assert not lifecycle.move(session, job_id, lifecycle.FAIL, attempt=1)
    assert row(database, job_id).status == "running"
    with database.transaction() as session:
        assert lifecycle.move(session, job_id, lifecycle.SUCCEED, attempt=2)


def test_a_decision_on_a_status_seen_earlier_is_refused_once_it_changed(database, job_id):
    """The reaper read `running`; the API has asked to cancel since: it must not re-queue the job."""
    set_job(database, job_id, status="cancelling")
    with database.transaction() as session:
        assert not lifecycle.move(session, job_id, lifecycle.REQUEUE, seen="running")
        assert not lifecycle.move(session, job_id, lifecycle.CANCEL, seen="running")
        assert lifecycle.move(session, job_id, lifecycle.CANCEL, seen="cancelling")
    assert row(database, job_id).status == "cancelled"
