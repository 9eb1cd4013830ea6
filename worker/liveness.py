"""Jobs whose worker died (SIGKILL, out of memory, a machine gone) are found and run again.

The process running a job writes `heartbeat_at` every `heartbeat_seconds` from a thread of its own,
whatever the job is doing. Every worker runs a reaper thread that re-queues jobs silent for longer
than `heartbeat_timeout_seconds`, or ends them `failed` (`worker_lost`) after `max_attempts` tries.
Both only write through conditional UPDATEs, so any number of workers can reap at once.
"""

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Row, select, update

from service.checkpoints import StoredCheckpoint
from service.config import Settings
from service.db import session_scope
from service.job_state import add_event, transition
from service.models import Job
from service.queue import enqueue_job

log = logging.getLogger(__name__)
LIVE_STATUSES = ("validating", "running", "cancelling")


@contextmanager
def heartbeat(job_id: str, interval: float) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            with session_scope() as session:
                session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=time.time()))

    thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def reap_lost_jobs(settings: Settings) -> list[str]:
    """Re-queue (or fail) every live job whose heartbeat stopped; returns the ids it re-queued."""
    cutoff = time.time() - settings.heartbeat_timeout_seconds
    with session_scope() as session:
        lost = session.execute(
            select(Job.id, Job.pk, Job.tenant_id, Job.status, Job.attempts).where(
                Job.status.in_(LIVE_STATUSES), Job.heartbeat_at < cutoff
            )
        ).all()
    requeued = []
    for job in lost:
        outcome = _recover(job, settings)
        if outcome == "queued":
            requeued.append(job.id)
        elif outcome is not None:  # the job ended: nothing will resume from its checkpoint
            StoredCheckpoint(job.tenant_id, job.id).delete()
    for job_id in requeued:
        enqueue_job(job_id)
    return requeued


def _recover(job: Row, settings: Settings) -> str | None:
    """Re-queue or end the lost job; its new status, or None if another worker got there first."""
    silent = f"its worker stopped answering for over {settings.heartbeat_timeout_seconds:g} s"
    error = None
    if job.status == "cancelling":
        to, level, message = "cancelled", "info", f"Job cancelled: {silent} while it was stopping."
    elif job.attempts >= settings.max_attempts:
        to, level = "failed", "error"
        message = (
            f"The job lost its worker {job.attempts} times ({silent}; killed, out of memory, or its machine "
            "gone). Check the worker logs and the job's memory needs before submitting it again."
        )
        error = {"code": "worker_lost", "message": message}
    else:
        to, level = "queued", "warning"
        message = (
            f"Re-queued: {silent}. It will run again (attempt {job.attempts + 1}) from its last checkpoint."
        )
    with session_scope() as session:
        moved = transition(session, job.id, [job.status], to, error=error, heartbeat_at=None)
        if moved:
            add_event(session, job.pk, message, level)
    return to if moved else None


def run_reaper(settings: Settings, stop: threading.Event) -> None:
    while not stop.wait(settings.reaper_interval_seconds):
        try:
            reap_lost_jobs(settings)
        except Exception:  # the database or broker may be briefly away: try again next round
            log.exception("reaping lost jobs failed")
