"""The engine's Reporter, backed by the database: events, status, throttled progress and cancel checks."""

import time

from sqlalchemy import delete, update

from core import lifecycle
from core.db import Database
from core.lifecycle import add_event, status_of
from core.models import Job, JobMetric


class DatabaseReporter:
    def __init__(
        self, database: Database, job_id: str, job_pk: int, progress_interval: float, cancel_interval: float
    ):
        self.database, self.job_id, self.job_pk = database, job_id, job_pk
        self.progress_interval, self.cancel_interval = progress_interval, cancel_interval
        self._last_progress = self._last_cancel_check = float("-inf")
        self._running_since: float | None = None
        self._start_step = 0  # steps done before this attempt: its rate counts from there
        self._stop_requested = False

    def event(self, message: str, level: str = "info") -> None:
        with self.database.transaction() as session:
            add_event(session, self.job_pk, message, level)

    def phase(self, phase: str) -> None:
        """`validating`: the job's status since its claim; `running`: the job starts running."""
        with self.database.transaction() as session:
            if phase == "validating" or lifecycle.move(session, self.job_id, lifecycle.START):
                add_event(session, self.job_pk, f"Phase: {phase}.")
        if phase == "running":
            self._running_since = time.monotonic()

    def progress(self, epoch: int, epochs: int, step: int, total_steps: int) -> None:
        now = time.monotonic()
        if step < total_steps and now - self._last_progress < self.progress_interval:
            return
        self._last_progress = now
        fraction = step / total_steps if total_steps else 0.0
        eta = None
        if self._running_since is not None and step > self._start_step:
            seconds_per_step = (now - self._running_since) / (step - self._start_step)
            eta = round(seconds_per_step * (total_steps - step), 1)
        progress = {"epoch": epoch, "epochs": epochs, "step": step, "total_steps": total_steps,
                    "fraction": round(fraction, 6), "eta_seconds": eta}  # fmt: skip
        with self.database.transaction() as session:
            session.execute(
                update(Job).where(Job.id == self.job_id).values(progress=progress, heartbeat_at=time.time())
            )

    def metrics(self, epoch: int, step: int, values: dict[str, float]) -> None:
        with self.database.transaction() as session:
            session.add_all(
                JobMetric(job_pk=self.job_pk, epoch=epoch, step=step, name=name, value=value)
                for name, value in values.items()
            )

    def rewind(self, step: int) -> None:
        self._start_step = step
        with self.database.transaction() as session:
            session.execute(delete(JobMetric).where(JobMetric.job_pk == self.job_pk, JobMetric.step > step))

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._stop_requested and now - self._last_cancel_check >= self.cancel_interval:
            self._last_cancel_check = now
            with self.database.transaction() as session:
                self._stop_requested = status_of(session, self.job_id) == "cancelling"
        return self._stop_requested
