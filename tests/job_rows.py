"""Jobs put in a state by hand, as a worker (or a lost one) would have left them, and read back."""

from sqlalchemy import select, update

from core.db import Database
from core.models import Job, JobEvent


def set_job(database: Database, job_id: str, **values) -> None:
    with database.transaction() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def job_state(database: Database, job_id: str) -> tuple[str, dict | None, list[str]]:
    """The job's status, error and event messages."""
    with database.transaction() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        events = session.scalars(select(JobEvent.message).where(JobEvent.job_pk == job.pk)).all()
        return job.status, job.error, events
