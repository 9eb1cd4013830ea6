"""A job whose worker dies resumes from its checkpoint and ends with the very student, metrics (all but
the latencies, which a clock measures) and series of a job that was never interrupted, whatever the
method and wherever it was killed, and whatever layout an older version saved it in. A checkpoint it
cannot use is either not used (another job's, unreadable) or fails the job (one that does not fit)."""

import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from engine.pipeline import JobFiles, run_distillation
from engine.plan.errors import JobFailed
from engine.plan.specs import MLPSpec
from engine.train.checkpoint_layouts import LAYOUT
from engine.train.checkpoints import Checkpoints, fingerprint
from tests.engine.factories import (
    FEATURES,
    NUM_CLASSES,
    FolderStore,
    KilledAt,
    RecordingReporter,
    WorkerKilled,
)

STEPS_PER_EPOCH = 17  # 540 training samples in batches of 32
CACHE_BATCHES = STEPS_PER_EPOCH + 2  # the teachers' one pass over the training and 60 validation samples
DROPOUT_STUDENT = MLPSpec(input_shape=[FEATURES], num_classes=NUM_CLASSES, hidden_sizes=[16], dropout=0.2)


def attempt(job, task, folder: Path, reporter, store=None, every_seconds=0.0, deadline=None):
    folder.mkdir(parents=True)
    files = JobFiles([task.teacher_path] * len(job.teachers), task.train_path)
    checkpoints = Checkpoints(store, every_seconds)
    return run_distillation(job, files, folder, reporter, checkpoints, deadline=deadline)


def killed_then_finished(job, task, folder: Path, kills: list[int], every_seconds=0.0):
    """Attempts killed at the given steps (each counted from the attempt's start), then one that ends."""
    store = FolderStore(folder)
    for number, kill_at in enumerate(kills, start=1):
        with pytest.raises(WorkerKilled):
            attempt(job, task, folder / f"attempt{number}", KilledAt(kill_at=kill_at), store, every_seconds)
    reporter = RecordingReporter()
    return attempt(job, task, folder / "last", reporter, store, every_seconds), reporter, store


TIMINGS = {
    "latency_ms",
    "speedup",
    "latency_device",
    "seconds",
    "saved_seconds",
    "peak_memory",
}  # read from a clock


def without_timings(metrics: dict) -> dict:
    return {
        k: without_timings(v) if isinstance(v, dict) else v for k, v in metrics.items() if k not in TIMINGS
    }


def assert_same_job(resumed, uninterrupted):
    assert without_timings(resumed.metrics) == without_timings(uninterrupted.metrics)
    assert resumed.series == uninterrupted.series
    weights = [load_file(r.artifacts["student.safetensors"]) for r in (resumed, uninterrupted)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


JOBS = {
    "standard, dropout, adamw, warm-up, cosine": (
        {"student_architecture": DROPOUT_STUDENT, "training": {"epochs": 3, "optimizer": "adamw",
                                                              "lr_schedule": "cosine", "warmup_epochs": 1.5}},
        [23, 12],  # mid-epoch 2 (in the warm-up's 26 steps), then 12 steps into the resumed attempt
    ),
    "two teachers drawn at random, feature pairs, temperature schedule": (
        {"teachers": [{"format": "safetensors", "architecture": {"family": "mlp", "input_shape": [FEATURES],
                       "num_classes": NUM_CLASSES, "hidden_sizes": [64, 64]}}] * 2,
         "distillation": {"ensemble": "random", "final_temperature": 1.0,
                          "features": [{"teacher": "hidden.1", "student": "hidden.0"}]},
         "training": {"epochs": 2}},
        [20],
    ),
    "mutual learning": ({"distillation": {"method": "mutual"}, "training": {"epochs": 2}}, [25]),
    "float16 steps with their gradient scaler": ({"training": {"epochs": 2, "precision": "fp16"}}, [24]),
    "born-again, killed in generation 2": (
        {"distillation": {"method": "born_again", "generations": 2}, "training": {"epochs": 2}},
        [2 * STEPS_PER_EPOCH + 5],
    ),
    "auto T, killed in the second trial and as the student goes on from the chosen one": (
        {"distillation": {"temperature": "auto", "search": {"temperatures": [1.0, 4.0], "budget_epochs": 2}},
         "training": {"epochs": 3}},  # 2 trials of 2 epochs, then the best one's third
        [2 * STEPS_PER_EPOCH + 5, 2 * STEPS_PER_EPOCH + 1],  # 5 steps into trial 2, then into its third
    ),
    "a search of TPE's draws and two rungs, killed in each rung": (
        {"distillation": {"temperature": "auto", "alpha": "auto", "search": {
            "temperatures": [1.0, 2.0, 4.0, 8.0], "alphas": [0.2, 0.8], "learning_rates": [1e-2, 3e-2],
            "budget_epochs": 20}},
         "training": {"epochs": 2, "learning_rate": "auto"}},
        [5 * STEPS_PER_EPOCH + 2, 14 * STEPS_PER_EPOCH + 1],  # 12 trials of 1 epoch, then 4 of 2
    ),
}  # fmt: skip


@pytest.mark.parametrize("overrides, kills", JOBS.values(), ids=JOBS.keys())
def test_a_resumed_job_ends_as_if_never_interrupted(make_job, blob_task, tmp_path, overrides, kills):
    job = make_job(**overrides)
    uninterrupted = attempt(job, blob_task, tmp_path / "uninterrupted", RecordingReporter())
    resumed, reporter, _ = killed_then_finished(job, blob_task, tmp_path / "killed", kills)
    assert_same_job(resumed, uninterrupted)
    assert any(message.startswith("Resumed from the checkpoint at step") for _, message in reporter.events)


def test_the_resumed_attempt_trains_only_what_was_left_and_reports_it_once(make_job, blob_task, tmp_path):
    job = make_job(training={"epochs": 3})
    _, reporter, _ = killed_then_finished(job, blob_task, tmp_path, [STEPS_PER_EPOCH + 6])
    # killed as step 23 opens: the last checkpoint, saved as step 22 opened, holds 21 steps
    resumed_at = STEPS_PER_EPOCH + 4
    assert reporter.rewinds == [resumed_at]
    assert reporter.stop_checks == CACHE_BATCHES + 3 * STEPS_PER_EPOCH - resumed_at
    assert [step for _, _, step, _ in reporter.progress_calls][0] == resumed_at + 1
    assert [(epoch, step) for epoch, step, _ in reporter.metric_calls] == [
        (2, 2 * STEPS_PER_EPOCH),
        (3, 3 * STEPS_PER_EPOCH),
    ]
    epoch_events = [message for _, message in reporter.events if message.startswith("Epoch ")]
    assert [message.split(":")[0] for message in epoch_events] == ["Epoch 2/3", "Epoch 3/3"]


def test_replayed_runs_report_no_events_again(make_job, blob_task, tmp_path):
    job = make_job(distillation={"method": "born_again", "generations": 3}, training={"epochs": 1})
    _, reporter, _ = killed_then_finished(job, blob_task, tmp_path, [2 * STEPS_PER_EPOCH + 3])
    messages = [message for _, message in reporter.events]
    resumed = (
        "Resumed from the checkpoint at step 35 of 51 (epoch 3 of 3): the training before it is not repeated."
    )
    running = messages[messages.index(resumed) :]
    assert not any(m.startswith(("Generation 1", "Generation 2", "Epoch 1/1")) for m in running)
    assert any(m.startswith("Generation3 Epoch 1/1") for m in running)
    assert any(m.startswith("Best on the validation set") for m in running)


def test_without_a_due_checkpoint_only_each_finished_run_is_saved(make_job, blob_task, tmp_path):
    job = make_job(distillation={"method": "born_again", "generations": 2}, training={"epochs": 2})
    store = FolderStore(tmp_path)
    attempt(job, blob_task, tmp_path / "job", RecordingReporter(), store, every_seconds=3600)
    assert store.saves == 2


def test_a_kill_before_any_checkpoint_starts_over(make_job, blob_task, tmp_path):
    job = make_job(training={"epochs": 2})
    uninterrupted = attempt(job, blob_task, tmp_path / "uninterrupted", RecordingReporter())
    resumed, reporter, store = killed_then_finished(job, blob_task, tmp_path / "killed", [10], 3600)
    assert_same_job(resumed, uninterrupted)
    assert reporter.rewinds == [0] and store.saves == 1  # the last attempt's one run, at its end
    assert not any(message.startswith("Resumed") for _, message in reporter.events)


def test_past_its_deadline_a_job_fails_saving_its_checkpoint_and_goes_on_from_it_under_a_larger_bound(
    make_job, blob_task, tmp_path, monkeypatch
):
    job = make_job(training={"epochs": 2, "max_seconds": 10})
    uninterrupted = attempt(job, blob_task, tmp_path / "uninterrupted", RecordingReporter())
    seconds = itertools.count()  # a second a step
    monkeypatch.setattr("engine.train.loop.time", SimpleNamespace(time=lambda: next(seconds)))
    store = FolderStore(tmp_path / "store")
    with pytest.raises(JobFailed) as failed:
        attempt(job, blob_task, tmp_path / "bounded", RecordingReporter(), store, 3600, deadline=10)
    assert failed.value.code == "time_limit_exceeded"
    assert f"at step 10 of {2 * STEPS_PER_EPOCH} (epoch 1 of 2)" in failed.value.message
    assert store.saves == 1  # none was due: the deadline saved it
    monkeypatch.undo()

    larger = job.model_copy(update={"training": job.training.model_copy(update={"max_seconds": 60})})
    reporter = RecordingReporter()
    resumed = attempt(larger, blob_task, tmp_path / "resumed", reporter, store, deadline=None)
    assert_same_job(resumed, uninterrupted)
    assert reporter.rewinds == [10]


def killed_checkpoint(
    job, task, folder: Path, kill_at: int, every_seconds: float = 0.0
) -> tuple[FolderStore, dict]:
    """The store of an attempt killed as step `kill_at` opened, and its checkpoint."""
    store = FolderStore(folder)
    with pytest.raises(WorkerKilled):
        attempt(job, task, folder / "killed", KilledAt(kill_at=kill_at), store, every_seconds)
    return store, torch.load(store.file, weights_only=True)


ANOTHER_VERSION = {
    "another fingerprint": lambda job: {"fingerprint": "another version"},
    "a newer layout": lambda job: {"layout": LAYOUT + 1, "fingerprint": fingerprint(job, LAYOUT + 1)},
}


@pytest.mark.parametrize("changes", ANOTHER_VERSION.values(), ids=ANOTHER_VERSION.keys())
def test_a_checkpoint_of_another_version_is_not_used(make_job, blob_task, tmp_path, changes):
    job = make_job(training={"epochs": 2})
    store, saved = killed_checkpoint(job, blob_task, tmp_path, 20)
    torch.save(saved | changes(job), store.file)
    reporter = RecordingReporter()
    attempt(job, blob_task, tmp_path / "second", reporter, store)
    assert reporter.rewinds == [0]
    assert (
        "warning",
        "The checkpoint was saved by another version of the service: training starts over.",
    ) in (reporter.events)


def as_layout_1(run: dict | None) -> dict | None:
    """A run's state as layout 1 kept it: its students, optimizers, schedulers, scalers and means in lists
    side by side; its step; between epochs, the last epoch's batch count."""
    if run is None:
        return None
    learners = run["learners"]
    students = [{"model": learner["model"], "objective": learner["objective"]} for learner in learners]
    if "generator" not in run:
        return {"students": students, "series": run["series"]}
    ended = run["order"] is None and run["epoch"] > 0
    return {
        "students": students,
        "optimizers": [learner["optimizer"] for learner in learners],
        "schedulers": [learner["scheduler"] for learner in learners],
        "scalers": [learner["scaler"] for learner in learners],
        "generator": run["generator"],
        "epoch": run["epoch"],
        "order": run["order"],
        "batch": STEPS_PER_EPOCH if ended else run["batch"],
        "step": run["epoch"] * STEPS_PER_EPOCH + run["batch"],
        "means": [learner["means"] for learner in learners],
        "series": run["series"],
    }


LAYOUT_1_JOBS = {
    "born-again, killed in generation 2 (the first finished)": (
        {"distillation": {"method": "born_again", "generations": 2}, "training": {"epochs": 2}},
        2 * STEPS_PER_EPOCH + 5,
        0.0,
    ),
    "auto T, killed as the student goes on from the trial it chose, saved only as each trial ended": (
        {
            "distillation": {
                "temperature": "auto",
                "search": {"temperatures": [1.0, 4.0], "budget_epochs": 2},
            },
            "training": {"epochs": 3, "precision": "fp16"},
        },
        4 * STEPS_PER_EPOCH + 3,
        3600.0,
    ),
    "mutual learning, killed mid-epoch": (
        {"distillation": {"method": "mutual"}, "training": {"epochs": 2}},
        25,
        0.0,
    ),
}


@pytest.mark.parametrize(
    "overrides, kill_at, every_seconds", LAYOUT_1_JOBS.values(), ids=LAYOUT_1_JOBS.keys()
)
def test_a_checkpoint_of_layout_1_is_upgraded_and_the_job_ends_as_if_never_interrupted(
    make_job, blob_task, tmp_path, overrides, kill_at, every_seconds
):
    job = make_job(**overrides)
    uninterrupted = attempt(job, blob_task, tmp_path / "uninterrupted", RecordingReporter())
    store, saved = killed_checkpoint(job, blob_task, tmp_path / "killed", kill_at, every_seconds)
    layout_1 = {name: saved[name] for name in ("epoch", "step", "rng")} | {
        "fingerprint": fingerprint(job, layout=1),
        "finished": [as_layout_1(run) for run in saved["finished"]],
        "live": as_layout_1(saved["live"]),
    }
    torch.save(layout_1, store.file)
    reporter = RecordingReporter()
    resumed = attempt(job, blob_task, tmp_path / "resumed", reporter, store, every_seconds)
    assert_same_job(resumed, uninterrupted)
    assert reporter.rewinds == [saved["step"]]


def test_a_checkpoint_that_does_not_fit_the_training_fails_the_job_saying_what_to_do(
    make_job, blob_task, tmp_path
):
    job = make_job(training={"epochs": 2})
    store, saved = killed_checkpoint(job, blob_task, tmp_path, 20)
    learner = saved["live"]["learners"][0]
    del learner["optimizer"]
    torch.save(saved, store.file)
    with pytest.raises(JobFailed) as failed:
        attempt(job, blob_task, tmp_path / "second", RecordingReporter(), store)
    assert failed.value.code == "checkpoint_unusable"
    assert "KeyError: 'optimizer'" in failed.value.message
    assert failed.value.message.endswith("submit the job again to train it from the start")


def test_an_unreadable_checkpoint_starts_over_with_a_warning(make_job, blob_task, tmp_path):
    job = make_job(training={"epochs": 1})
    store = FolderStore(tmp_path)
    store.file.write_bytes(b"PK\x03\x04 torn in the middle of a write")
    reporter = RecordingReporter()
    result = attempt(job, blob_task, tmp_path / "job", reporter, store)
    assert result.metrics["student"]["accuracy"] > 0.5
    warnings = [message for level, message in reporter.events if level == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith("The checkpoint could not be read")


def test_a_failing_store_costs_the_checkpoints_not_the_job(make_job, blob_task, tmp_path):
    class FullDisk(FolderStore):
        def save(self, path: Path) -> None:
            raise OSError(28, "No space left on device")

    reporter = RecordingReporter()
    result = attempt(
        make_job(training={"epochs": 1}), blob_task, tmp_path / "job", reporter, FullDisk(tmp_path)
    )
    assert result.metrics["student"]["accuracy"] > 0.5
    warnings = [message for level, message in reporter.events if level == "warning"]
    assert warnings and all("No space left on device" in w and "training goes on" in w for w in warnings)
