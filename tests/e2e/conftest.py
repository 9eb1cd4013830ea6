"""A teacher trained here on generated data, saved as a user would upload it."""

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from engine.plan.specs import MLPSpec
from tests.factories import blobs, save_npz, save_onnx_teacher, save_teacher, train_teacher

TEACHER = MLPSpec(input_shape=[16], num_classes=4, hidden_sizes=[64, 64])


@dataclass
class Task:
    model: torch.nn.Module
    teacher: Path
    train: Path
    validation: Path
    x_val: object
    y_val: object


@pytest.fixture(scope="session")
def task(tmp_path_factory) -> Task:
    folder = tmp_path_factory.mktemp("task")
    x, y = blobs(1200, seed=0)
    x_val, y_val = blobs(300, seed=1)
    teacher = train_teacher(TEACHER, x, y)
    return Task(
        model=teacher,
        teacher=save_teacher(folder / "teacher.safetensors", teacher),
        train=save_npz(folder / "train.npz", x, y),
        validation=save_npz(folder / "validation.npz", x_val, y_val),
        x_val=x_val,
        y_val=y_val,
    )


@pytest.fixture(scope="session")
def onnx_teacher(task, tmp_path_factory) -> Path:
    """The task's teacher as a user exports it to ONNX."""
    path = tmp_path_factory.mktemp("onnx") / "teacher.onnx"
    return save_onnx_teacher(path, task.model, torch.zeros(2, *TEACHER.input_shape))


def job_request(teacher_id: str, train_id: str, validation_id: str | None = None, **overrides) -> dict:
    request = {
        "teacher": {"file_id": teacher_id, "format": "safetensors", "architecture": TEACHER.model_dump()},
        "student": {
            "architecture": {"family": "mlp", "input_shape": [16], "num_classes": 4, "hidden_sizes": [16]}
        },
        "dataset": {"train_file_id": train_id, "validation_file_id": validation_id},
        "distillation": {"temperature": 4.0, "alpha": 0.9, "beta": 0.1},
        "training": {"epochs": 4, "batch_size": 64, "learning_rate": 0.01, "seed": 0},
        "export": [],  # no ONNX (seconds a job): tests/e2e/test_ci_examples.py runs the default
        "name": "e2e",
    }
    for section, values in overrides.items():
        request[section] = {**request[section], **values} if isinstance(values, dict) else values
    return request
