"""Latency in a job's metrics: per sample at batch 1 and 64, for the teacher, the student and the int8
student, with the speed-up between them. (How fast is the benchmarks' business: nothing here is timed.)"""

import torch

from engine.export.latency import latency_ms, speedup
from engine.pipeline import JobFiles, run_distillation
from tests.engine.factories import RecordingReporter


def test_a_model_is_measured_per_sample_at_both_batch_sizes():
    calls = []
    measured = latency_ms(lambda x: calls.append(len(x)), torch.zeros(5, 3), torch.device("cpu"))
    assert set(measured) == {"batch_1", "batch_64"} and all(ms >= 0 for ms in measured.values())
    assert set(calls) == {1, 64} and calls.count(1) >= 4 and calls.count(64) >= 4  # warm-up + 3 or more


def test_the_speedup_is_the_teachers_latency_over_the_students():
    assert speedup({"batch_1": 2.0, "batch_64": 0.5}, {"batch_1": 0.5, "batch_64": 0.25}) == {
        "batch_1": 4.0, "batch_64": 2.0
    }  # fmt: skip


def test_a_job_reports_each_models_latency_and_the_speedup(make_job, blob_task, tmp_path):
    job = make_job(export=["int8"], training={"epochs": 1})
    files = JobFiles([blob_task.teacher_path], blob_task.train_path)
    metrics = run_distillation(job, files, tmp_path, RecordingReporter()).metrics
    for model in ("teacher", "student", "int8"):
        assert set(metrics[model]["latency_ms"]) == {"batch_1", "batch_64"}, model
    teacher, student = metrics["teacher"]["latency_ms"], metrics["student"]["latency_ms"]
    assert metrics["speedup"] == speedup(teacher, student)
    assert metrics["latency_device"] == "cpu"
