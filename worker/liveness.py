"""Jobs whose worker died (SIGKILL, out of memory, a machine gone) are found and run again.

A worker whose training process dies hears of it at once (`training_process_lost`): a kill by the
kernel's out-of-memory killer ends the job `failed` (`out_of_memory`) after that one try, any other
death re-queues it. A worker that dies itself tells no one: the process running a job writes
`heartbeat_at` every `heartbeat_seconds` from a thread of its own, whatever the job is doing, and every
worker runs a reaper thread that re-queues jobs silent for longer than `heartbeat_timeout_seconds`. A
worker that takes a job's message marks the queued job so too: killed before it starts the job, it
would take the message with it (the filesystem broker has no redelivery, Redis's waits for hours), and
the reaper sends the job again.
Either way a job lost `max_attempts` times ends `failed` (`worker_lost`). All of it writes through
conditional UPDATEs, so any number of workers can recover jobs at once.
"""

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Row, Select, select, update

from core import lifecycle
from core.checkpoint_store import StoredCheckpoint
from core.config import Settings
from core.db import Database
from core.lifecycle import add_event
from core.models import Job
from core.resources import Resources
from worker.memory_cgroup import memory_limit
from worker.repeating import repeating

log = logging.getLogger(__name__)


@contextmanager
def heartbeat(database: Database, job_id: str, interval: float) -> Iterator[None]:
    def beat() -> None:
        with database.transaction() as session:
            session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=time.time()))

    with repeating(f"heartbeat-{job_id}", interval, beat):
        yield


def taken_from_queue(database: Database, job_id: str) -> None:
    """A worker took the job's message from the queue: it beats for the job until its child claims it, so
    that a worker killed in between (and the message with it) is noticed like one killed later."""
    with database.transaction() as session:
        session.execute(
            update(Job).where(Job.id == job_id, Job.status == "queued").values(heartbeat_at=time.time())
        )


def reap_lost_jobs(resources: Resources) -> list[str]:
    """Re-queue (or end) every live job whose heartbeat stopped, and send again every queued one whose
    worker went silent before starting it; returns the ids it queued again."""
    timeout = resources.settings.heartbeat_timeout_seconds
    silent = Job.heartbeat_at < time.time() - timeout
    with resources.database.transaction() as session:
        lost = session.execute(_lost_job_query().where(Job.status.in_(lifecycle.LIVE), silent)).all()
        taken = session.execute(_lost_job_query().where(Job.status == "queued", silent)).all()
    why = f"its worker stopped answering for over {timeout:g} s"
    requeued = [job.id for job in lost if _recover(resources, job, why) is lifecycle.REQUEUE]
    return requeued + [job.id for job in taken if _send_again(resources, job, f"{why} before starting it")]


def training_process_lost(resources: Resources, job_id: str, how: str, out_of_memory: bool) -> None:
    """The process running the job died (`how`: "signal 9 (SIGKILL)"); the worker that forked it says so."""
    with resources.database.transaction() as session:
        job = session.execute(_lost_job_query().where(Job.id == job_id)).one_or_none()
    if job is None:
        return
    if job.status == "queued":  # it died before claiming the job, whose message is gone with it
        _send_again(resources, job, f"the process that was to run it died with {how}")
    elif job.status in lifecycle.LIVE:
        _recover(resources, job, f"its training process died with {how}", out_of_memory)


def _lost_job_query() -> Select:
    return select(Job.id, Job.pk, Job.tenant_id, Job.status, Job.attempts, Job.heartbeat_at)


def _send_again(resources: Resources, job: Row, why: str) -> bool:
    """Queue a queued job's message again: the worker that took it is gone. False if another did."""
    with resources.database.transaction() as session:
        sent = session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == "queued", Job.heartbeat_at == job.heartbeat_at)
            .values(heartbeat_at=None)
        ).rowcount
        if sent:
            add_event(session, job.pk, f"Sent to the queue again: {why}.", "warning")
    if sent:
        resources.queue.enqueue(job.id)
    return bool(sent)


def _recover(
    resources: Resources, job: Row, why: str, out_of_memory: bool = False
) -> lifecycle.Transition | None:
    """Re-queue or end the lost job; the transition made, or None if another worker got there first."""
    transition, level, message, error = _recovery(resources.settings, job, why, out_of_memory)
    with resources.database.transaction() as session:
        moved = lifecycle.move(session, job.id, transition, seen=job.status, error=error, heartbeat_at=None)
        if moved:
            add_event(session, job.pk, message, level)
    if not moved:
        return None
    if transition is lifecycle.REQUEUE:
        resources.queue.enqueue(job.id)
    else:  # the job ended: nothing will resume from its checkpoint
        StoredCheckpoint(resources.storage, job.tenant_id, job.id).delete()
    return transition


def _recovery(
    settings: Settings, job: Row, why: str, out_of_memory: bool
) -> tuple[lifecycle.Transition, str, str, dict | None]:
    """What becomes of a lost job: the transition, the event's level and message, the job's error."""
    if job.status == "cancelling":
        return lifecycle.CANCEL, "info", f"Job cancelled: {why} while it was stopping.", None
    if out_of_memory:
        limit = memory_limit()
        within = f" (this worker's memory limit is {limit / 1024**3:.3g} GiB)" if limit else ""
        message = (
            f"The job ran out of memory: the kernel killed its training process{within}. Lower "
            "training.batch_size or use smaller models. Jobs that need more than "
            f"DISTILL_MAX_JOB_MEMORY_BYTES (now {settings.job_memory_limit / 1024**3:.3g} GiB) are refused "
            "at submission: it should be below what a worker can give one job."
        )
        return lifecycle.FAIL, "error", message, {"code": "out_of_memory", "message": message}
    if job.attempts >= settings.max_attempts:
        message = (
            f"The job lost its worker {job.attempts} times ({why}; killed, out of memory, or its machine "
            "gone). Check the worker logs and the job's memory needs before submitting it again."
        )
        return lifecycle.FAIL, "error", message, {"code": "worker_lost", "message": message}
    message = f"Re-queued: {why}. It will run again (attempt {job.attempts + 1}) from its last checkpoint."
    return lifecycle.REQUEUE, "warning", message, None


def run_reaper(resources: Resources, stop: threading.Event) -> None:
    while not stop.wait(resources.settings.reaper_interval_seconds):
        try:
            reap_lost_jobs(resources)
        except Exception:  # the database or broker may be briefly away: try again next round
            log.exception("reaping lost jobs failed")
