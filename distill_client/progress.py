"""What `distill` shows while it waits: every event as a line (a CI log reads them), and on a terminal a
live line below them with the job's epoch, step, latest loss and accuracy, and its ETA. And while a file
uploads, on a terminal only, a bar of the bytes sent and their rate."""

import sys
import threading

from rich import progress as bars
from rich.console import Console
from rich.live import Live

from distill_client.objects import Event

REFRESH_SECONDS = 1.0


class Progress:
    def __init__(self, client, job_id: str, quiet: bool = False):
        self.client, self.job_id, self.quiet = client, job_id, quiet
        self.console = Console(stderr=True, highlight=False)
        self.live = Live("", console=self.console, transient=True) if self.console.is_terminal else None
        self._stop = threading.Event()

    def __enter__(self) -> "Progress":
        if self.live and not self.quiet:
            self.live.start()
            threading.Thread(target=self._refresh, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.live and self.live.is_started:
            self.live.stop()

    def event(self, event: Event) -> None:
        if self.quiet:
            return
        line = f"{event.level:<7} {event.message}"
        if self.live and self.live.is_started:
            self.live.console.print(line, markup=False)
        else:
            print(line, file=sys.stderr, flush=True)

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            try:
                self.live.update(self._line())
            except Exception:  # a status read that failed: the next refresh tries again
                continue

    def _line(self) -> str:
        job = self.client.get_job(self.job_id)
        progress = job.progress or {}
        parts = [job.status]
        if progress.get("epochs"):
            parts.append(f"epoch {progress['epoch']}/{progress['epochs']}")
        if progress.get("total_steps"):
            parts.append(f"step {progress['step']}/{progress['total_steps']} ({progress['fraction']:.0%})")
        latest = {point.name: point.value for point in self.client.metrics(self.job_id)}
        if "loss" in latest:
            parts.append(f"loss {latest['loss']:.4f}")
        if "validation_perplexity" in latest:  # a causal language model's
            parts.append(f"perplexity {latest['validation_perplexity']:.3f}")
        if "validation_accuracy" in latest:
            parts.append(f"accuracy {latest['validation_accuracy']:.2%}")
        if progress.get("eta_seconds") is not None:
            parts.append(f"ETA {progress['eta_seconds']:.0f} s")
        return "  ·  ".join(parts)


class UploadProgress:
    """`on_progress` of `Client.upload_file`: on a terminal (and not `quiet`), a bar of the bytes sent, their
    rate and the time left, drawn from the first bytes read (after any conversion) and gone once done."""

    def __init__(self, label: str, quiet: bool = False):
        console = Console(stderr=True, highlight=False)
        columns = (bars.TextColumn("{task.description}"), bars.BarColumn(), bars.DownloadColumn(),
                   bars.TransferSpeedColumn(), bars.TimeRemainingColumn())  # fmt: skip
        shown = console.is_terminal and not quiet
        self.bar = bars.Progress(*columns, console=console, transient=True) if shown else None
        self.label = label
        self.task: bars.TaskID | None = None

    def __call__(self, sent: int, total: int) -> None:
        if self.bar is None:
            return
        if self.task is None:
            self.task = self.bar.add_task(f"uploading {self.label}", total=total)
            self.bar.start()
        self.bar.update(self.task, completed=sent)

    def __enter__(self) -> "UploadProgress":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
