"""What the operator allows each tenant: quotas on its unfinished jobs at once (429) and on the bytes of
its stored files (413), unlimited unless set.

Stored bytes count the tenant's uploaded files only, not job artifacts: files are what a tenant can
delete (`DELETE /v1/files/{id}`) to get back under its quota; artifacts have no delete endpoint, so
counting them would lock a tenant out for good once its outputs filled the quota.

Both quotas are checked twice: up front, so a request that is plainly over stores nothing, and again
after the new row is flushed in the request's transaction, one transaction at a time per tenant (see
`_one_at_a_time`), so concurrent requests cannot together pass the quota; over it, it is rolled back."""

from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from core.config import Settings
from core.errors import RequestError
from core.lifecycle import UNFINISHED
from core.models import File, Job


def stored_bytes(session: Session, tenant_id: str) -> int:
    return session.scalar(select(func.coalesce(func.sum(File.bytes), 0)).where(File.tenant_id == tenant_id))


def unfinished_jobs(session: Session, tenant_id: str) -> int:
    query = select(func.count()).where(Job.tenant_id == tenant_id, Job.status.in_(UNFINISHED))
    return session.scalar(query.select_from(Job))


def storage_quota_exceeded(quota: int, used: int) -> RequestError:
    return RequestError(
        413,
        "storage_quota_exceeded",
        f"Storing this file would take your files past this server's storage quota of {quota} bytes per "
        f"tenant ({used} bytes already stored): delete files you no longer need (DELETE /v1/files/{{id}}) "
        "and retry.",
        param="file",
    )


def too_many_jobs(limit: int) -> RequestError:
    return RequestError(
        429,
        "too_many_jobs",
        f"You already have {limit} unfinished job(s) (queued, validating, running or cancelling), this "
        f"server's limit per tenant of {limit} at once: wait for one to finish, or cancel one, then retry.",
    )


def _one_at_a_time(session: Session, tenant_id: str) -> None:
    """Serialize the tenant's quota checks until this transaction ends. SQLite already does: the row just
    flushed holds its one write lock. PostgreSQL (READ COMMITTED) would let two transactions each miss
    the other's uncommitted row, so there they queue on a transaction-scoped advisory lock; the second
    then counts the first's committed row."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"limits:{tenant_id}"})


def check_job_slots(session: Session, settings: Settings, tenant_id: str) -> None:
    """After the new job is flushed: over the limit, roll it back and refuse (429)."""
    limit = settings.max_concurrent_jobs
    if limit is None:
        return
    _one_at_a_time(session, tenant_id)
    if unfinished_jobs(session, tenant_id) > limit:
        session.rollback()
        raise too_many_jobs(limit)


@dataclass(frozen=True)
class Room:
    quota: int
    used: int

    @property
    def left(self) -> int:
        return self.quota - self.used


def room_for_upload(session: Session, settings: Settings, tenant_id: str) -> Room | None:
    """What the tenant may still store (None: no quota); refuses (413) when nothing is left."""
    quota = settings.max_stored_bytes
    if quota is None:
        return None
    used = stored_bytes(session, tenant_id)
    if used >= quota:
        raise storage_quota_exceeded(quota, used)
    return Room(quota, used)


def check_stored_bytes(session: Session, settings: Settings, tenant_id: str) -> None:
    """After the new file is flushed: over the quota, roll it back and refuse (413)."""
    quota = settings.max_stored_bytes
    if quota is None:
        return
    _one_at_a_time(session, tenant_id)
    used = stored_bytes(session, tenant_id)
    if used > quota:
        session.rollback()
        raise storage_quota_exceeded(quota, stored_bytes(session, tenant_id))
