"""Checkpoints: the training state a job saves as it goes, so that the attempt after a lost worker
continues where the last one stopped instead of starting over.

A job trains its runs in a fixed order (the trials of an `auto` search, then the student, the cohort
or each generation); `train_cohort` is one run. A checkpoint holds the finished runs' students and
series, and the run in progress (see `loop.Run`: each student with its optimizer, schedule and gradient
scaler, the shuffle generator, the epoch's sample order and the batches done) with the global RNG
states. Running the job's code again with it replays the finished runs, loading their students instead
of training them, and continues the run in progress from the batch it had reached: the resumed job ends
with the very student an uninterrupted one would have.

A checkpoint of an older layout is upgraded (`checkpoint_layouts`); one of this job and layout that does
not fit its training fails the job, which must not go on from a half-read state.
"""

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from engine.plan.errors import JobFailed
from engine.plan.specs import EngineJob
from engine.reporting import Reporter
from engine.train.checkpoint_layouts import LAYOUT, upgraded


class CheckpointStore(Protocol):
    """Where the caller keeps a job's checkpoint between attempts (the worker: its storage)."""

    def save(self, path: Path) -> None: ...  # keep this file as the checkpoint, replacing the last

    def fetch(self, path: Path) -> bool: ...  # copy the checkpoint to `path`; False if there is none


class Resumable(Protocol):
    """A run as a checkpoint sees it (`loop.Run`)."""

    def state_dict(self) -> dict: ...  # everything to continue it from where it is

    def load_state_dict(self, state: dict) -> None: ...

    def finished_state(self) -> dict: ...  # what later runs and the export need of it once done

    def load_finished_state(self, state: dict) -> None: ...


@dataclass
class Restored:
    """What the last attempt saved: where it was, the runs it finished, the run it was in, and what it kept
    of its own (`JobCheckpoints.keep`)."""

    epoch: int
    step: int
    finished: list[dict]
    live: dict | None
    rng: dict
    kept: dict


class Checkpoints:
    """Where a job's checkpoints are kept between attempts (`store`; None: nowhere, so none is saved) and
    how often one is saved: when `every_seconds` have passed since the last save (checked at every step),
    and at the end of every run."""

    def __init__(self, store: CheckpointStore | None = None, every_seconds: float = 300.0):
        self.store, self.every_seconds = store, every_seconds

    def for_job(
        self, job: EngineJob, folder: Path, reporter: Reporter, saves: bool = True
    ) -> "JobCheckpoints":
        """The job's checkpointing, holding the last attempt's checkpoint if there is one and it is this
        job's (else a warning event says why the job starts over). `saves`: False for a process that
        resumes from the checkpoint but leaves saving to another (rank 0 of a job over several devices)."""
        path = folder / "checkpoint.pt"
        restored = self._fetch(path, job, reporter)
        saves = saves and self.store is not None
        return JobCheckpoints(self, path, fingerprint(job), reporter, restored=restored, saves=saves)

    def _fetch(self, path: Path, job: EngineJob, reporter: Reporter) -> Restored | None:
        if self.store is None or not self.store.fetch(path):
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a torn or foreign file must not fail the job: it only costs time
            reporter.event(f"The checkpoint could not be read ({error}): training starts over.", "warning")
            return None
        finally:
            path.unlink(missing_ok=True)
        layout = saved.get("layout", 1) if isinstance(saved, dict) else None
        if layout not in range(1, LAYOUT + 1) or saved.get("fingerprint") != fingerprint(job, layout):
            reporter.event(
                "The checkpoint was saved by another version of the service: training starts over.",
                "warning",
            )
            return None
        with loading_checkpoint():
            saved = upgraded(saved, layout)
            return Restored(
                saved["epoch"], saved["step"], saved["finished"], saved["live"], saved["rng"], saved["kept"]
            )


class JobCheckpoints:
    """One job's checkpointing (see `Checkpoints.for_job`): replays the runs the last attempt finished,
    continues the one it was in, and saves the job's state as it goes."""

    def __init__(
        self,
        settings: Checkpoints,
        path: Path,
        fingerprint: str,
        reporter: Reporter,
        *,
        restored: Restored | None,
        saves: bool,
    ):
        self.settings, self.path, self.fingerprint, self.reporter = settings, path, fingerprint, reporter
        self.restored, self.saves = restored, saves
        self.finished: list[dict] = []
        self.kept: dict = {} if restored is None else restored.kept
        self.replaying = restored is not None  # until the job reaches a run the last attempt had not finished
        self._runs_begun = 0
        self._last_save = time.monotonic()

    def begin_run(self, run: Resumable) -> bool:
        """Put the run where the last attempt left it; True if that attempt had finished it."""
        index, self._runs_begun = self._runs_begun, self._runs_begun + 1
        restored = self.restored
        if restored is not None and index < len(restored.finished):
            with loading_checkpoint():
                run.load_finished_state(restored.finished[index])
            self.finished.append(restored.finished[index])
            return True
        self.replaying = False
        if restored is not None and index == len(restored.finished) and restored.live is not None:
            with loading_checkpoint():
                run.load_state_dict(restored.live)
                set_rng_states(restored.rng)
        return False

    def end_run(self, run: Resumable, epoch: int, step: int) -> None:
        if not self.saves:
            return
        self.finished.append(run.finished_state())
        self.save(epoch, step, None)

    def keep(self, name: str, value) -> None:
        """Keep `value` (what `torch.load` reads back with `weights_only`: tensors, text, numbers) in this and
        every later checkpoint, saved now: work before the first run that a resumed job need not redo."""
        self.kept[name] = value
        self.save(epoch=0, step=0, live=None)

    def due(self) -> bool:
        return self.saves and time.monotonic() - self._last_save >= self.settings.every_seconds

    def save(self, epoch: int, step: int, live: dict | None) -> None:
        if not self.saves:
            return
        state = {
            "layout": LAYOUT,
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "step": step,
            "finished": self.finished,
            "live": live,
            "rng": rng_states(),
            "kept": self.kept,
        }
        try:
            torch.save(state, self.path)
            self.settings.store.save(self.path)
        except OSError as error:  # a full disk or a storage away for a while must not fail the job
            self.reporter.event(
                f"Saving a checkpoint failed ({error}); training goes on and tries again in "
                f"{self.settings.every_seconds:g} s.",
                "warning",
            )
        finally:
            self.path.unlink(missing_ok=True)
        self._last_save = time.monotonic()


class QuietWhileReplaying:
    """A reporter that drops the events of the runs a resumed job replays: the attempt that ran them
    reported them already. Everything else passes through."""

    def __init__(self, reporter: Reporter, checkpoints: JobCheckpoints):
        self._reporter, self._checkpoints = reporter, checkpoints

    def event(self, message: str, level: str = "info") -> None:
        if not self._checkpoints.replaying:
            self._reporter.event(message, level)

    def __getattr__(self, name: str):
        return getattr(self._reporter, name)


def fingerprint(job: EngineJob, layout: int = LAYOUT) -> str:
    """What a checkpoint of `layout` for this job holds, to tell it from another job's. The job's time
    bound is not part of it: the same job under a larger bound goes on from it."""
    trained = job.model_dump_json(exclude={"training": {"max_seconds"}})
    return hashlib.sha256(f"{layout}:{trained}".encode()).hexdigest()


@contextmanager
def loading_checkpoint() -> Iterator[None]:
    """Fails the job, saying what to do, where the checkpoint does not fit its training."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        reason = (str(error).strip().splitlines() or [""])[0][:300]
        raise JobFailed(
            "checkpoint_unusable",
            f"the checkpoint this job was resuming from does not fit its training ({type(error).__name__}: "
            f"{reason}): submit the job again to train it from the start",
        ) from error


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
