"""The engine's Reporter, backed by the database: events, status, throttled progress and cancel checks."""

import time

from sqlalchemy import delete, update

from core import lifecycle
from core.db import Database
from core.lifecycle import add_event, status_of
from core.models import Job, JobMetric
from core.resources import Resources

MIN_RATE_SECONDS = 1.0  # of training before a rate (and an ETA) is worth showing


class DatabaseReporter:
    def __init__(
        self,
        database: Database,
        job_id: str,
        job_pk: int,
        *,
        progress_interval: float,
        cancel_interval: float,
    ):
        self.database, self.job_id, self.job_pk = database, job_id, job_pk
        self.progress_interval, self.cancel_interval = progress_interval, cancel_interval
        self._last_progress = self._last_cancel_check = float("-inf")
        self._running = False
        self._rate_from: tuple[float, int] | None = None  # (time, step) of the first step this attempt saw
        self._stop_requested = False

    @classmethod
    def for_job(cls, resources: Resources, job: Job) -> "DatabaseReporter":
        """The job's reporter, at the intervals of the worker's settings."""
        settings = resources.settings
        return cls(
            resources.database,
            job.id,
            job.pk,
            progress_interval=settings.progress_interval_seconds,
            cancel_interval=settings.cancel_check_seconds,
        )

    def event(self, message: str, level: str = "info") -> None:
        with self.database.transaction() as session:
            add_event(session, self.job_pk, message, level)

    def phase(self, phase: str) -> None:
        """`validating`: the job's status since its claim; `running`: the job starts running."""
        with self.database.transaction() as session:
            if phase == "validating" or lifecycle.move(session, self.job_id, lifecycle.START):
                add_event(session, self.job_pk, f"Phase: {phase}.")
        if phase == "running":
            self._running = True

    def progress(self, epoch: int, epochs: int, step: int, total_steps: int) -> None:
        now = time.monotonic()
        if step < total_steps and now - self._last_progress < self.progress_interval:
            return
        self._last_progress = now
        fraction = round(step / total_steps, 6) if total_steps else 0.0
        eta = self._eta(now, step, total_steps)
        progress = {
            "epoch": epoch,
            "epochs": epochs,
            "step": step,
            "total_steps": total_steps,
            "fraction": fraction,
            "eta_seconds": eta,
        }
        with self.database.transaction() as session:
            # a job that ended, or went back to the queue, keeps its own
            session.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.status.in_(lifecycle.LIVE))
                .values(progress=progress, heartbeat_at=time.time())
            )

    def _eta(self, now: float, step: int, total_steps: int) -> float | None:
        """Seconds left at the rate since the first step this attempt reported, so that the first step's
        warm-up (allocations, caches) does not count; None until 3 more steps and 1 s have passed."""
        if not self._running:
            return None
        if self._rate_from is None:
            self._rate_from = (now, step)
            return None
        since, first_step = self._rate_from
        if step - first_step < 3 or now - since < MIN_RATE_SECONDS:
            return None
        return round((now - since) / (step - first_step) * (total_steps - step), 1)

    def metrics(self, epoch: int, step: int, values: dict[str, float]) -> None:
        with self.database.transaction() as session:
            session.add_all(
                JobMetric(job_pk=self.job_pk, epoch=epoch, step=step, name=name, value=value)
                for name, value in values.items()
            )

    def rewind(self, step: int) -> None:
        self._rate_from = None  # a resumed attempt's rate counts from its own first step
        with self.database.transaction() as session:
            session.execute(delete(JobMetric).where(JobMetric.job_pk == self.job_pk, JobMetric.step > step))

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._stop_requested and now - self._last_cancel_check >= self.cancel_interval:
            self._last_cancel_check = now
            with self.database.transaction() as session:
                self._stop_requested = status_of(session, self.job_id) == "cancelling"
        return self._stop_requested
