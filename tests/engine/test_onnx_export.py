"""`student.onnx` and `student.int8.onnx`: written, measured with ONNX Runtime against the PyTorch
student, and runnable where there is only ONNX Runtime and numpy."""

import json
import subprocess
import sys

import numpy as np
import pytest

from engine.pipeline import JobFiles, run_distillation
from engine.specs import EngineJob

from .factories import STUDENT_SPEC, TEACHER_SPEC, RecordingReporter

RUN_WITHOUT_TORCH = """
import json, sys
import numpy as np, onnxruntime
data = np.load(sys.argv[2])
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
logits = session.run(None, {session.get_inputs()[0].name: data["x"]})[0]
accuracy = float((logits.argmax(1) == data["y"]).mean())
print(json.dumps({"accuracy": accuracy, "torch": "torch" in sys.modules}))
"""


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


def test_the_int8_onnx_student_is_measured(exported):
    int8 = exported[0].metrics["onnx"]["int8"]
    assert int8["agreement"] > 0.9 and int8["accuracy"] is not None
    assert int8["bytes"] == exported[0].artifacts["student.int8.onnx"].stat().st_size


def test_student_onnx_runs_with_onnx_runtime_and_numpy_alone(exported, tmp_path):
    """A deployment without PyTorch: its accuracy is the one the job reported."""
    result, blob_task = exported
    data = np.load(blob_task.train_path)
    np.savez(tmp_path / "validation.npz", x=data["x"].astype(np.float32), y=data["y"])
    model, validation = str(result.artifacts["student.onnx"]), str(tmp_path / "validation.npz")
    ran = subprocess.run([sys.executable, "-c", RUN_WITHOUT_TORCH, model, validation],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert seen == {"accuracy": pytest.approx(result.metrics["onnx"]["accuracy"]), "torch": False}
