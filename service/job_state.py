"""Job status changes and events, shared by the API and the worker.

Every change is a conditional UPDATE (`WHERE status IN (...)`), so the API's cancel and the worker's
progress can race without either overwriting the other's decision.
"""

from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.models import Job, JobEvent, now


def add_event(session: Session, job_pk: int, message: str, level: str = "info") -> None:
    session.add(JobEvent(job_pk=job_pk, message=message, level=level))


def transition(
    session: Session, job_id: str, allowed_from: Iterable[str], to: str, attempt: int | None = None, **fields
) -> bool:
    """Move the job to `to` if its status is one of `allowed_from` (and, given `attempt`, if no later
    attempt has taken the job over since); True if it moved."""
    if to in ("succeeded", "failed", "cancelled"):
        fields.setdefault("finished_at", now())
    conditions = [Job.id == job_id, Job.status.in_(tuple(allowed_from))]
    if attempt is not None:
        conditions.append(Job.attempts == attempt)
    result = session.execute(update(Job).where(*conditions).values(status=to, **fields))
    return result.rowcount == 1


def status_of(session: Session, job_id: str) -> str | None:
    return session.scalar(select(Job.status).where(Job.id == job_id))
