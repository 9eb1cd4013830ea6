"""`student.onnx` and `student.int8.onnx`: written, measured with ONNX Runtime against the PyTorch
student, with their latency under ONNX Runtime (tests/e2e/test_ci_examples.py runs a downloaded one in a
venv of onnxruntime and numpy alone)."""

import pytest

from engine.pipeline import JobFiles, run_distillation
from engine.plan.specs import EngineJob
from tests.engine.factories import STUDENT_SPEC, TEACHER_SPEC, RecordingReporter


@pytest.fixture(scope="module")
def exported(blob_task, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("onnx")
    job = EngineJob.model_validate({
        "teachers": [{"format": "safetensors", "architecture": TEACHER_SPEC}],
        "student_architecture": STUDENT_SPEC,
        "training": {"epochs": 3, "batch_size": 32, "learning_rate": 1e-2, "device": "cpu"},
        "export": ["onnx", "int8"],
    })  # fmt: skip
    files = JobFiles([blob_task.teacher_path], blob_task.train_path, validation=blob_task.train_path)
    return run_distillation(job, files, out_dir, RecordingReporter()), blob_task


def test_the_onnx_student_agrees_with_the_pytorch_one(exported):
    result, _ = exported
    onnx = result.metrics["onnx"]
    assert {"student.onnx", "student.int8.onnx"} <= set(result.artifacts)
    assert onnx["agreement"] == 1.0 and onnx["max_abs_difference"] < 1e-4
    assert onnx["accuracy"] == result.metrics["student"]["accuracy"]
    assert onnx["bytes"] == result.artifacts["student.onnx"].stat().st_size
    assert set(onnx["latency_ms"]) == {"batch_1", "batch_64"} and onnx["latency_ms"]["batch_1"] > 0


def test_the_int8_onnx_student_is_measured(exported):
    int8 = exported[0].metrics["onnx"]["int8"]
    assert int8["agreement"] > 0.9 and int8["accuracy"] is not None
    assert int8["bytes"] == exported[0].artifacts["student.int8.onnx"].stat().st_size
