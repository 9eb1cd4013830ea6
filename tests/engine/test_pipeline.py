"""The whole job on a tiny task: a trained MLP teacher distilled into a smaller MLP."""

import json
import math
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.export import Dim

from engine.models.registry import build_model
from engine.pipeline import JobFiles, run_distillation
from engine.plan.errors import JobCancelled, JobFailed
from engine.plan.specs import CNNSpec, MLPSpec
from engine.runtime.devices import resolve_device
from engine.train.loop import make_scheduler

from .factories import FEATURES, NUM_CLASSES, RecordingReporter, gaussian_blobs

EPOCHS, BATCH_SIZE, TRAIN_SAMPLES = 4, 32, 540  # 600 samples, 10% held out
STEPS_PER_EPOCH = math.ceil(TRAIN_SAMPLES / BATCH_SIZE)
# The teachers' one pass over the training and validation sets (the cache) checks for a stop at each batch.
CACHE_BATCHES = STEPS_PER_EPOCH + math.ceil((600 - TRAIN_SAMPLES) / BATCH_SIZE)
STUDENT_FILES = {"student.safetensors", "student.json", "student.pt2"}


def distill(job, task, out_dir, reporter=None, train_path=None, validation_path=None, teacher_path=None):
    reporter = reporter or RecordingReporter()
    files = JobFiles([teacher_path or task.teacher_path], train_path or task.train_path, validation_path)
    result = run_distillation(job, files, out_dir, reporter)
    return result, reporter


def distill_error(job, task, tmp_path, **paths) -> JobFailed:
    with pytest.raises(JobFailed) as caught:
        distill(job, task, tmp_path / "out", **paths)
    return caught.value


@pytest.fixture(scope="module")
def distilled(blob_task, make_job, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("distilled")
    result, reporter = distill(make_job(), blob_task, out_dir)
    return result, reporter, out_dir


def test_student_learns_the_task(distilled):
    result, _, _ = distilled
    assert result.metrics["teacher"]["accuracy"] > 0.95
    assert result.metrics["student"]["accuracy"] > 0.9
    assert result.metrics["agreement"] > 0.9


def test_final_metrics_have_the_documented_shape(distilled):
    metrics = distilled[0].metrics
    assert set(metrics) == {"teacher", "student", "agreement", "accuracy_retention", "compression", "speedup",
                            "latency_device", "teacher_cache", "peak_memory"}  # fmt: skip
    assert metrics["peak_memory"]["cuda_bytes"] is None
    assert (
        10 * 2**20 < metrics["peak_memory"]["process_bytes"] < 8 * 2**30
    )  # torch alone takes more than 10 MiB
    assert set(metrics["student"]) == {"accuracy", "parameters", "latency_ms"}
    assert metrics["teacher"]["parameters"] == 8 * 64 + 64 + 64 * 64 + 64 + 64 * 4 + 4
    assert metrics["student"]["parameters"] == 8 * 16 + 16 + 16 * 4 + 4
    assert metrics["compression"] == metrics["teacher"]["parameters"] / metrics["student"]["parameters"]
    assert metrics["accuracy_retention"] == pytest.approx(
        metrics["student"]["accuracy"] / metrics["teacher"]["accuracy"]
    )


def test_series_has_one_point_per_epoch_per_name(distilled):
    result, reporter, _ = distilled
    names = ["loss", "soft_loss", "hard_loss", "validation_accuracy", "validation_agreement"]
    for name in names:
        points = [point for point in result.series if point["name"] == name]
        assert [point["epoch"] for point in points] == list(range(1, EPOCHS + 1))
        assert [point["step"] for point in points] == [
            STEPS_PER_EPOCH * epoch for epoch in range(1, EPOCHS + 1)
        ]
    assert len(result.series) == EPOCHS * len(names)
    assert [(epoch, step) for epoch, step, _ in reporter.metric_calls] == [
        (epoch, STEPS_PER_EPOCH * epoch) for epoch in range(1, EPOCHS + 1)
    ]
    losses = [point["value"] for point in result.series if point["name"] == "loss"]
    assert losses[-1] < losses[0]


def test_progress_is_reported_every_step(distilled):
    _, reporter, _ = distilled
    total = EPOCHS * STEPS_PER_EPOCH
    assert [step for _, _, step, _ in reporter.progress_calls] == list(range(1, total + 1))
    assert {(epochs, total_steps) for _, epochs, _, total_steps in reporter.progress_calls} == {
        (EPOCHS, total)
    }
    assert reporter.stop_checks == total + CACHE_BATCHES


def test_phases_and_events(distilled):
    _, reporter, _ = distilled
    assert reporter.phases == ["validating", "running"]
    messages = [message for _, message in reporter.events]
    assert "Teacher loaded (safetensors): 4,996 parameters" in messages
    assert any(
        message.startswith("Dataset: 540 training samples (labeled), 60 validation") for message in messages
    )
    assert "Student built (mlp): 212 parameters" in messages
    assert sum(message.startswith("Epoch ") for message in messages) == EPOCHS


def test_artifacts_and_metrics_file(distilled):
    result, _, out_dir = distilled
    assert set(result.artifacts) == STUDENT_FILES | {"metrics.json"}
    assert all(path.parent == out_dir and path.exists() for path in result.artifacts.values())
    summary = json.loads(result.artifacts["metrics.json"].read_text())
    assert summary["final"] == result.metrics
    assert summary["series"] == result.series
    assert summary["device"] == "cpu" and summary["seconds"] > 0


def test_same_seed_gives_identical_weights(distilled, blob_task, make_job, tmp_path):
    first = distilled[0].artifacts["student.safetensors"]
    again, _ = distill(make_job(), blob_task, tmp_path / "again")
    assert again.artifacts["student.safetensors"].read_bytes() == first.read_bytes()
    assert again.series == distilled[0].series


def test_another_seed_gives_other_weights(distilled, blob_task, make_job, tmp_path):
    other, _ = distill(make_job(training={"seed": 1, "epochs": 1}), blob_task, tmp_path / "other")
    first = load_file(distilled[0].artifacts["student.safetensors"])
    assert not torch.equal(
        load_file(other.artifacts["student.safetensors"])["head.weight"], first["head.weight"]
    )


@pytest.mark.parametrize(
    "stop_after, steps",
    [(CACHE_BATCHES - 3, 0), (CACHE_BATCHES + 5, 4)],
    ids=["while the teachers' outputs are computed", "while training"],
)
def test_stopping_cancels_before_writing_any_student_file(blob_task, make_job, tmp_path, stop_after, steps):
    reporter = RecordingReporter(stop_after=stop_after)
    with pytest.raises(JobCancelled):
        distill(make_job(), blob_task, tmp_path / "out", reporter=reporter)
    assert len(reporter.progress_calls) == steps
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unlabeled_training_learns_from_the_teacher_alone(blob_task, make_job, tmp_path):
    result, reporter = distill(make_job(), blob_task, tmp_path / "out", train_path=blob_task.unlabeled_path)
    assert {point["name"] for point in result.series} == {"loss", "soft_loss", "validation_agreement"}
    assert result.metrics["teacher"]["accuracy"] is None and result.metrics["student"]["accuracy"] is None
    assert result.metrics["accuracy_retention"] is None
    assert result.metrics["agreement"] > 0.9
    assert any(level == "warning" and "no labels" in message for level, message in reporter.events)


def test_validation_file_and_cosine_sgd(blob_task, make_job, tmp_path):
    x, y = gaussian_blobs(100, seed=5)
    np.savez(tmp_path / "validation.npz", x=x, y=y)
    job = make_job(training={"optimizer": "sgd", "lr_schedule": "cosine", "learning_rate": 0.05})
    result, reporter = distill(job, blob_task, tmp_path / "out", validation_path=tmp_path / "validation.npz")
    assert any(
        "600 training samples (labeled), 100 validation samples from the validation file" in m
        for _, m in reporter.events
    )
    assert result.metrics["student"]["accuracy"] > 0.9


def test_pt2_teacher(blob_task, make_job, tmp_path):
    program = torch.export.export(
        blob_task.teacher, (torch.randn(2, FEATURES),), dynamic_shapes=({0: Dim("batch", min=1)},)
    )
    torch.export.save(program, tmp_path / "teacher.pt2")
    job = make_job(teacher_format="pt2", teacher_architecture=None, training={"epochs": 2})
    result, reporter = distill(job, blob_task, tmp_path / "out", teacher_path=tmp_path / "teacher.pt2")
    assert result.metrics["teacher"]["parameters"] == 4996
    assert result.metrics["teacher"]["accuracy"] > 0.95


def test_huge_learning_rate_diverges(blob_task, make_job, tmp_path):
    job = make_job(training={"optimizer": "sgd", "learning_rate": 10.0}, distillation={"temperature": 1.0})
    error = distill_error(job, blob_task, tmp_path)
    assert error.code == "loss_diverged"
    assert "lower learning_rate (now 10.0)" in error.message and "epoch" in error.message


def test_a_diverging_schedule_cites_the_temperature_of_the_step_that_diverged(blob_task, make_job, tmp_path):
    distillation = {"temperature": 1.0, "final_temperature": 50.0}
    job = make_job(training={"optimizer": "sgd", "learning_rate": 10.0}, distillation=distillation)
    error = distill_error(job, blob_task, tmp_path)
    step = int(re.search(r"step (\d+)", error.message)[1])
    steps = job.training.epochs * math.ceil(540 / 32)  # 600 samples less the 10% hold-out, batches of 32
    temperature = 1.0 + 49.0 * (step - 1) / (steps - 1)
    assert f"at temperature {temperature:.3g}" in error.message, error.message
    assert "lower learning_rate (now 10.0)" in error.message and "or temperature" not in error.message


def test_inputs_too_large_to_train_on_are_blamed_not_the_learning_rate(blob_task, make_job, tmp_path):
    x, y = gaussian_blobs(600)
    np.savez(tmp_path / "unscaled.npz", x=x * 1e30, y=y)
    job = make_job(training={"optimizer": "sgd"})
    error = distill_error(job, blob_task, tmp_path, train_path=tmp_path / "unscaled.npz")
    assert error.code == "loss_diverged"
    assert "inputs reach" in error.message and "Standardize" in error.message


def test_values_beyond_float32_are_refused_when_the_dataset_loads(blob_task, make_job, tmp_path):
    x, y = gaussian_blobs(600)
    x = x.astype(np.float64)
    x[3, 1] = 1e300  # finite in float64, infinite in float32
    np.savez(tmp_path / "huge.npz", x=x, y=y)
    error = distill_error(make_job(), blob_task, tmp_path, validation_path=tmp_path / "huge.npz")
    assert error.code == "dataset_invalid" and "float32" in error.message


def test_a_teacher_that_overflows_on_the_validation_set_fails_the_job(blob_task, make_job, tmp_path):
    """Never metrics made of NaN: a teacher whose validation logits are not finite fails the job at once."""
    x, y = gaussian_blobs(100, seed=1)
    x[7] = 3e38  # finite in float32; the teacher's layers overflow
    np.savez(tmp_path / "validation.npz", x=x, y=y)
    reporter = RecordingReporter()
    with pytest.raises(JobFailed) as caught:
        distill(
            make_job(), blob_task, tmp_path / "out", reporter, validation_path=tmp_path / "validation.npz"
        )
    assert caught.value.code == "teacher_rejected_input"
    assert "NaN or infinite" in caught.value.message and "1 validation sample" in caught.value.message
    assert reporter.phases == ["validating"]


def test_infinite_teacher_logits_diverge_and_blame_the_teacher(blob_task, make_job, tmp_path):
    """The teacher is fine on the validation set but overflows on the training inputs."""
    x, y = gaussian_blobs(600)
    np.savez(tmp_path / "huge.npz", x=np.full_like(x, 3e38), y=y)
    np.savez(tmp_path / "validation.npz", x=x[:100], y=y[:100])
    paths = {"train_path": tmp_path / "huge.npz", "validation_path": tmp_path / "validation.npz"}
    error = distill_error(make_job(), blob_task, tmp_path, **paths)
    assert error.code == "loss_diverged"
    assert "the teacher produced NaN or infinite logits at epoch 1, step 1" in error.message


def test_a_teacher_with_infinite_weights_fails_before_training(blob_task, make_job, tmp_path):
    state = {key: value.clone() for key, value in blob_task.teacher.state_dict().items()}
    state["head.bias"][0] = math.inf
    save_file(state, tmp_path / "teacher.safetensors")
    reporter, teacher = RecordingReporter(), tmp_path / "teacher.safetensors"
    with pytest.raises(JobFailed) as caught:
        distill(make_job(), blob_task, tmp_path / "out", reporter, teacher_path=teacher)
    assert caught.value.code == "teacher_rejected_input" and "NaN or infinite" in caught.value.message
    assert reporter.phases == ["validating"]


def test_teacher_rejecting_the_input(blob_task, make_job, tmp_path):
    teacher_spec = MLPSpec(input_shape=[5], num_classes=NUM_CLASSES, hidden_sizes=[3])
    save_file(build_model(teacher_spec).state_dict(), tmp_path / "teacher.safetensors")
    job = make_job(teacher_architecture=teacher_spec)
    error = distill_error(job, blob_task, tmp_path, teacher_path=tmp_path / "teacher.safetensors")
    assert error.code == "teacher_rejected_input"
    assert "batch of shape [32, 8]" in error.message and "RuntimeError" in error.message


def test_teacher_exported_with_a_fixed_batch_size_is_rejected_before_training(blob_task, make_job, tmp_path):
    program = torch.export.export(blob_task.teacher, (torch.randn(BATCH_SIZE, FEATURES),))
    torch.export.save(program, tmp_path / "teacher.pt2")
    job = make_job(teacher_format="pt2", teacher_architecture=None)
    reporter = RecordingReporter()
    with pytest.raises(JobFailed) as caught:
        distill(job, blob_task, tmp_path / "out", reporter=reporter, teacher_path=tmp_path / "teacher.pt2")
    assert caught.value.code == "teacher_rejected_input"
    assert f"batch of shape [{TRAIN_SAMPLES % BATCH_SIZE}, 8]" in caught.value.message
    assert reporter.phases == ["validating"]


class UnbatchedTeacher(nn.Module):
    def forward(self, x):
        return x.sum(dim=1)


def test_teacher_output_must_be_two_dimensional(blob_task, make_job, tmp_path):
    program = torch.export.export(
        UnbatchedTeacher(), (torch.randn(2, FEATURES),), dynamic_shapes=({0: Dim("batch", min=1)},)
    )
    torch.export.save(program, tmp_path / "teacher.pt2")
    job = make_job(teacher_format="pt2", teacher_architecture=None)
    error = distill_error(job, blob_task, tmp_path, teacher_path=tmp_path / "teacher.pt2")
    assert error.code == "teacher_rejected_input"
    assert "returned shape [32]" in error.message


def test_student_num_classes_must_match_the_teacher(blob_task, make_job, tmp_path):
    job = make_job(student_architecture=MLPSpec(input_shape=[FEATURES], num_classes=3))
    error = distill_error(job, blob_task, tmp_path)
    assert error.code == "incompatible_shapes"
    assert "teacher outputs 4 classes" in error.message and "num_classes is 3" in error.message


def test_student_input_shape_must_match_the_data(blob_task, make_job, tmp_path):
    job = make_job(student_architecture=MLPSpec(input_shape=[3, 3], num_classes=NUM_CLASSES))
    error = distill_error(job, blob_task, tmp_path)
    assert error.code == "incompatible_shapes"
    assert "[8]" in error.message and "[3, 3]" in error.message


def test_labels_out_of_range(blob_task, make_job, tmp_path):
    x, y = gaussian_blobs(50)
    y[[3, 7]] = [4, 9]
    np.savez(tmp_path / "train.npz", x=x, y=y)
    paths = {"train_path": tmp_path / "train.npz", "validation_path": blob_task.train_path}
    error = distill_error(make_job(), blob_task, tmp_path, **paths)
    assert error.code == "labels_out_of_range"
    assert "2 training labels are outside [0, 4) (min 0, max 9)" in error.message


def test_negative_validation_labels(blob_task, make_job, tmp_path):
    x, y = gaussian_blobs(20)
    y[0] = -1
    np.savez(tmp_path / "validation.npz", x=x, y=y)
    error = distill_error(make_job(), blob_task, tmp_path, validation_path=tmp_path / "validation.npz")
    assert error.code == "labels_out_of_range"
    assert "1 validation labels" in error.message and "min -1" in error.message


def test_hard_loss_only_needs_labels(blob_task, make_job, tmp_path):
    job = make_job(distillation={"alpha": 0.0, "beta": 1.0})
    error = distill_error(job, blob_task, tmp_path, train_path=blob_task.unlabeled_path)
    assert error.code == "labels_required"


def test_invalid_dataset_fails_validation(blob_task, make_job, tmp_path):
    (tmp_path / "train.npz").write_bytes(b"nope")
    assert (
        distill_error(make_job(), blob_task, tmp_path, train_path=tmp_path / "train.npz").code
        == "dataset_invalid"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu(blob_task, make_job, tmp_path):
    error = distill_error(make_job(training={"device": "cuda"}), blob_task, tmp_path)
    assert error.code == "device_unavailable"


def test_more_gpus_than_the_worker_has(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda", 1) == torch.device("cuda")
    with pytest.raises(JobFailed) as caught:
        resolve_device("auto", 2)
    assert caught.value.code == "device_unavailable"
    assert "training.devices is 2 but this worker has 1 GPU:" in caught.value.message


def test_cnn_on_tiny_images(make_job, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    teacher_spec = CNNSpec(input_shape=[1, 8, 8], num_classes=3, widths=[8, 16])
    torch.manual_seed(0)
    save_file(build_model(teacher_spec).state_dict(), tmp_path / "teacher.safetensors")
    student_spec = CNNSpec(input_shape=[1, 8, 8], num_classes=3, widths=[4, 4, 4], dropout=0.1)
    job = make_job(
        teacher_architecture=teacher_spec,
        student_architecture=student_spec,
        training={"epochs": 2, "batch_size": 16},
    )
    result, _ = run_and_check_cnn(job, tmp_path)
    program = torch.export.load(result.artifacts["student.pt2"]).module()
    assert program(torch.randn(1, 1, 8, 8)).shape == (1, 3)


def run_and_check_cnn(job, tmp_path):
    reporter = RecordingReporter()
    files = JobFiles([tmp_path / "teacher.safetensors"], tmp_path / "train.npz")
    result = run_distillation(job, files, tmp_path / "out", reporter)
    assert set(result.artifacts) == STUDENT_FILES | {"metrics.json"}
    assert len(reporter.metric_calls) == 2
    return result, reporter


def test_cnn_batch_of_one_with_one_by_one_maps_is_refused(make_job, tmp_path):
    np.savez(tmp_path / "train.npz", x=np.zeros((10, 1, 4, 4), dtype=np.float32))
    teacher_spec = CNNSpec(input_shape=[1, 4, 4], num_classes=3, widths=[4])
    save_file(build_model(teacher_spec).state_dict(), tmp_path / "teacher.safetensors")
    student_spec = CNNSpec(input_shape=[1, 4, 4], num_classes=3, widths=[4, 4, 4])  # 4 -> 2 -> 1
    job = make_job(
        teacher_architecture=teacher_spec, student_architecture=student_spec, training={"batch_size": 1}
    )
    error = distill_error(
        job, None, tmp_path, train_path=tmp_path / "train.npz", teacher_path=tmp_path / "teacher.safetensors"
    )
    assert error.code == "incompatible_shapes" and "batch_size >= 2" in error.message


COSINE_QUARTER = (1 + math.cos(math.pi / 4)) / 2  # a quarter of the way down the cosine


@pytest.mark.parametrize(
    ("schedule", "warmup_steps", "factors"),
    [
        ("constant", 0, [1, 1, 1, 1, 1]),
        ("cosine", 0, [1, COSINE_QUARTER, 0.5, 1 - COSINE_QUARTER, 0]),
        ("constant", 2, [0, 0.5, 1, 1, 1]),
        ("cosine", 2, [0, 0.5, 1, 0.5, 0]),  # the cosine over the 2 steps after the warm-up
        ("cosine", 8, [0, 0.125, 0.25, 0.375, 0.5]),  # a run shorter than its warm-up
        ("linear", 0, [1, 0.75, 0.5, 0.25, 0]),
        ("linear", 2, [0, 0.5, 1, 0.5, 0]),
    ],
)
def test_learning_rate_schedules(schedule, warmup_steps, factors):
    """The factor at each of 4 steps, and after the last."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = make_scheduler(optimizer, schedule, total_steps=4, warmup_steps=warmup_steps)
    rates = []
    for _ in range(5):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.1 * factor for factor in factors])


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you "
                     "tried to allocate 26843545600 bytes. Error code 12 (Cannot allocate memory)"),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        MemoryError(),
    ],
    ids=["cpu allocator", "cuda", "python"],
)  # fmt: skip
def test_running_out_of_memory_is_a_failure_that_says_what_to_change(
    blob_task, make_job, tmp_path, monkeypatch, failure
):
    def allocate(*_args):
        raise failure

    monkeypatch.setattr("engine.pipeline.train_students", allocate)
    error = distill_error(make_job(), blob_task, tmp_path)
    assert error.code == "out_of_memory" and "batch_size" in error.message
    assert str(failure).split(".")[0][:40] in error.message
