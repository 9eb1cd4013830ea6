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

from core import lifecycle
from core.checkpoints import StoredCheckpoint
from core.db import Database
from core.lifecycle import add_event
from core.models import Job
from core.resources import Resources

log = logging.getLogger(__name__)


@contextmanager
def heartbeat(database: Database, job_id: str, interval: float) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            with database.transaction() as session:
                session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=time.time()))

    thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def reap_lost_jobs(resources: Resources) -> list[str]:
    """Re-queue (or end) every live job whose heartbeat stopped; returns the ids it re-queued."""
    cutoff = time.time() - resources.settings.heartbeat_timeout_seconds
    with resources.database.transaction() as session:
        lost = session.execute(
            select(Job.id, Job.pk, Job.tenant_id, Job.status, Job.attempts).where(
                Job.status.in_(lifecycle.LIVE), Job.heartbeat_at < cutoff
            )
        ).all()
    requeued = []
    for job in lost:
        outcome = _recover(resources, job)
        if outcome is lifecycle.REQUEUE:
            requeued.append(job.id)
        elif outcome is not None:  # the job ended: nothing will resume from its checkpoint
            StoredCheckpoint(resources.storage, job.tenant_id, job.id).delete()
    for job_id in requeued:
        resources.queue.enqueue(job_id)
    return requeued


def _recover(resources: Resources, job: Row) -> lifecycle.Transition | None:
    """Re-queue or end the lost job; the transition made, or None if another worker got there first."""
    settings = resources.settings
    silent = f"its worker stopped answering for over {settings.heartbeat_timeout_seconds:g} s"
    error = None
    if job.status == "cancelling":
        transition, level = lifecycle.CANCEL, "info"
        message = f"Job cancelled: {silent} while it was stopping."
    elif job.attempts >= settings.max_attempts:
        transition, level = lifecycle.FAIL, "error"
        message = (
            f"The job lost its worker {job.attempts} times ({silent}; killed, out of memory, or its machine "
            "gone). Check the worker logs and the job's memory needs before submitting it again."
        )
        error = {"code": "worker_lost", "message": message}
    else:
        transition, level = lifecycle.REQUEUE, "warning"
        message = (
            f"Re-queued: {silent}. It will run again (attempt {job.attempts + 1}) from its last checkpoint."
        )
    with resources.database.transaction() as session:
        moved = lifecycle.move(session, job.id, transition, seen=job.status, error=error, heartbeat_at=None)
        if moved:
            add_event(session, job.pk, message, level)
    return transition if moved else None


def run_reaper(resources: Resources, stop: threading.Event) -> None:
    while not stop.wait(resources.settings.reaper_interval_seconds):
        try:
            reap_lost_jobs(resources)
        except Exception:  # the database or broker may be briefly away: try again next round
            log.exception("reaping lost jobs failed")
