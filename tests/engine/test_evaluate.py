"""Predictions and the student-versus-teacher metrics."""

import pytest
import torch
from torch import nn

from engine.evaluate import classification_metrics, final_metrics, predict

TEACHER = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])  # predicts 0, 1, 0, 1
STUDENT = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 1.0], [0.0, 2.0]])  # predicts 0, 0, 0, 1
LABELS = torch.tensor([0, 1, 1, 1])


def test_metrics_with_labels():
    metrics = classification_metrics(TEACHER, STUDENT, LABELS)
    assert metrics == {
        "teacher_accuracy": 0.75,
        "student_accuracy": 0.5,
        "agreement": 0.75,
        "accuracy_retention": pytest.approx(0.5 / 0.75),
    }


def test_metrics_without_labels_only_have_agreement():
    metrics = classification_metrics(TEACHER, STUDENT, None)
    assert metrics == {
        "teacher_accuracy": None,
        "student_accuracy": None,
        "agreement": 0.75,
        "accuracy_retention": None,
    }


def test_retention_is_undefined_when_the_teacher_is_always_wrong():
    assert classification_metrics(TEACHER, STUDENT, torch.tensor([1, 0, 1, 0]))["accuracy_retention"] is None


def test_final_metrics_object():
    metrics = final_metrics(TEACHER, STUDENT, LABELS, teacher_parameters=1000, student_parameters=250)
    assert metrics == {
        "teacher": {"accuracy": 0.75, "parameters": 1000},
        "student": {"accuracy": 0.5, "parameters": 250},
        "agreement": 0.75,
        "accuracy_retention": pytest.approx(2 / 3),
        "compression": 4.0,
    }


def test_predict_batches_in_eval_mode_and_restores_the_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    x = torch.randn(11, 3)
    logits = predict(model, x, batch_size=4, device="cpu")
    assert model.training
    assert logits.device.type == "cpu" and not logits.requires_grad
    torch.testing.assert_close(logits, model.eval()(x))
