"""Tiny datasets, models, a recording reporter and a checkpoint store, shared by the engine tests."""

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.plan.specs import MLPSpec
from examples.toy_teacher import blobs

NUM_CLASSES = 4
FEATURES = 8
TEACHER_SPEC = MLPSpec(input_shape=[FEATURES], num_classes=NUM_CLASSES, hidden_sizes=[64, 64])
STUDENT_SPEC = MLPSpec(input_shape=[FEATURES], num_classes=NUM_CLASSES, hidden_sizes=[16])


def gaussian_blobs(num_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """NUM_CLASSES well-separated clusters in FEATURES dimensions, with the same centers for every seed."""
    return blobs(num_samples, FEATURES, NUM_CLASSES, seed, spread=3.0)


@dataclass
class RecordingReporter:
    """Keeps every call; `stop_after` makes should_stop() answer True from that call on."""

    stop_after: int | None = None
    events: list[tuple[str, str]] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    progress_calls: list[tuple[int, int, int, int]] = field(default_factory=list)
    metric_calls: list[tuple[int, int, dict]] = field(default_factory=list)
    rewinds: list[int] = field(default_factory=list)
    stop_checks: int = 0

    def event(self, message: str, level: str = "info") -> None:
        self.events.append((level, message))

    def phase(self, phase: str) -> None:
        self.phases.append(phase)

    def progress(self, epoch: int, epochs: int, step: int, total_steps: int) -> None:
        self.progress_calls.append((epoch, epochs, step, total_steps))

    def metrics(self, epoch: int, step: int, values: dict[str, float]) -> None:
        self.metric_calls.append((epoch, step, dict(values)))

    def rewind(self, step: int) -> None:
        self.rewinds.append(step)
        self.metric_calls = [call for call in self.metric_calls if call[1] <= step]

    def should_stop(self) -> bool:
        self.stop_checks += 1
        return self.stop_after is not None and self.stop_checks >= self.stop_after


def series(reporter: RecordingReporter, name: str) -> list[float]:
    """The values of metric `name` in the order the reporter received them."""
    return [values[name] for _epoch, _step, values in reporter.metric_calls if name in values]


class WorkerKilled(BaseException):
    """Stands for SIGKILL: the engine catches nothing of it, and saves nothing more."""


@dataclass
class KilledAt(RecordingReporter):
    """Dies as its `kill_at`-th step opens (at the first stop check after `kill_at` - 1 steps; the teacher
    cache's pass before the first step checks too, so `kill_at` >= 2)."""

    kill_at: int = 0

    def should_stop(self) -> bool:
        self.stop_checks += 1
        if len(self.progress_calls) == self.kill_at - 1:
            raise WorkerKilled
        return False


class FolderStore:
    """A job's checkpoint kept in a folder, as the worker keeps it in the storage."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.file, self.saves, self.largest = folder / "checkpoint.pt", 0, 0

    def save(self, path: Path) -> None:
        shutil.copyfile(path, self.file)
        self.saves, self.largest = self.saves + 1, max(self.largest, path.stat().st_size)

    def fetch(self, path: Path) -> bool:
        if not self.file.exists():
            return False
        shutil.copyfile(self.file, path)
        return True


class FolderCacheStore:
    """Teacher tables kept in a folder by key, as the worker keeps them in the storage."""

    def __init__(self, folder: Path):
        self.folder, self.saved = folder, []
        folder.mkdir(parents=True, exist_ok=True)

    def fetch(self, key: str) -> Path | None:
        return self.folder / key if (self.folder / key).is_dir() else None

    def save(self, key: str, folder: Path) -> str | None:
        shutil.rmtree(self.folder / key, ignore_errors=True)
        shutil.copytree(folder, self.folder / key)
        self.saved.append(key)
        return None


def train_classifier(model: nn.Module, x: np.ndarray, y: np.ndarray, steps: int = 60) -> nn.Module:
    torch.manual_seed(0)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
