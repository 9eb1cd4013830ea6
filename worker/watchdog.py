"""A job that must stop is stopped, even where a step never returns (an endless teacher, a hung read).

The training loop stops itself at a step boundary after a cancel or past the job's deadline
(`engine.train.loop.Clock`). Where it has not within `DISTILL_STOP_GRACE_SECONDS`, a thread of the
process running the job ends the job (`cancelled`, or `failed` with `time_limit_exceeded`, its last
checkpoint kept) and SIGKILLs that process; the launcher and ranks of a job over several devices die with
it (`worker.ranks.lifeline`). Celery's prefork pool starts a new child for the next job, and the
worker's handler of a dead child (`worker.liveness.training_process_lost`) finds the job ended and
leaves it so; a message of the job delivered again finds it not queued (`worker.tasks`)."""

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import select

from core import lifecycle
from core.models import Job
from core.resources import Resources
from engine.plan.errors import time_limit_exceeded
from worker.ending import end_failed, end_job
from worker.repeating import repeating

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.5  # between two looks at the job's status


class Overdue(Enum):
    CANCEL = "a cancel"
    TIME_LIMIT = "its time bound"


@dataclass
class Watchdog:
    """Decides, from the job's status at each look, when the process running it must be ended."""

    deadline: float  # a time.time()
    grace: float
    cancel_seen: float | None = None  # when a look first found the job `cancelling`

    def overdue(self, status: str | None, now: float) -> Overdue | None:
        """What the job's process must be ended for, once the job has had the grace period to stop
        itself; None while it may still, or when it is no longer this process's to end."""
        if status == "cancelling":
            if self.cancel_seen is None:
                self.cancel_seen = now
            return Overdue.CANCEL if now - self.cancel_seen >= self.grace else None
        if status in lifecycle.LIVE and now >= self.deadline + self.grace:
            return Overdue.TIME_LIMIT
        return None


def end_this_process() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def watchdog(
    resources: Resources, job: Job, deadline: float, end_process: Callable[[], None] = end_this_process
) -> Iterator[None]:
    """Watch the job from a thread of its own while the block runs it; `end_process`: how the job's
    process is ended once the job was ended for it."""
    dog = Watchdog(deadline, resources.settings.stop_grace_seconds)

    def watch() -> bool:
        try:
            if _ended_overdue(resources, job, dog):
                end_process()
                return True
        except Exception:  # the database may be briefly away: look again
            log.exception("watching job %s failed", job.id)
        return False

    with repeating(f"watchdog-{job.id}", WATCH_SECONDS, watch):
        yield


def _ended_overdue(resources: Resources, job: Job, dog: Watchdog) -> bool:
    """True if the job was overdue and this look ended it."""
    with resources.database.transaction() as session:
        status, progress = session.execute(
            select(Job.status, Job.progress).where(Job.id == job.id)
        ).one_or_none() or (None, None)
    overdue = dog.overdue(status, time.time())
    if overdue is None:
        return False
    stuck = (
        f"its training did not stop within {dog.grace:g} s of {overdue.value} ({_how_far(progress)}), so "
        "its worker ended the process running it"
    )
    if overdue is Overdue.CANCEL:
        return end_job(resources, job, lifecycle.CANCEL, f"Job cancelled: {stuck}; no student was saved.")
    return end_failed(resources, job, time_limit_exceeded(f"and {stuck}; its last checkpoint is kept"))


def _how_far(progress: dict | None) -> str:
    if not progress:
        return "before its first training step"
    return (
        f"at step {progress['step']} of {progress['total_steps']}, epoch {progress['epoch']} of "
        f"{progress['epochs']}"
    )
