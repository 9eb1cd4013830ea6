"""Predictions and the metrics that compare the student with its teacher."""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from engine.data.arrays import ArrayDataset, iterate_batches


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block, the previous mode after it."""
    was_training = model.training
    _set_training(model, False)
    try:
        yield model
    finally:
        _set_training(model, was_training)


def _set_training(model: nn.Module, training: bool) -> None:
    try:
        model.train(training)
    except NotImplementedError:
        pass  # torch.export modules refuse mode switches and keep the mode they were exported in


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int, device: torch.device | str) -> Tensor:
    """Logits for every sample of `x`, as float32 on the CPU."""
    batches = iterate_batches(ArrayDataset(x, None), batch_size)
    with evaluating(model):
        return torch.cat([model(batch.to(device)).float().cpu() for batch, _ in batches])


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return (logits.argmax(dim=1) == labels).sum().item() / len(labels)


def classification_metrics(teacher_logits: Tensor, student_logits: Tensor, labels: Tensor | None) -> dict:
    """Accuracies (None without labels), top-1 agreement, and the share of teacher accuracy kept."""
    agreement = accuracy(student_logits, teacher_logits.argmax(dim=1))
    if labels is None:
        return {
            "teacher_accuracy": None,
            "student_accuracy": None,
            "agreement": agreement,
            "accuracy_retention": None,
        }
    teacher_accuracy = accuracy(teacher_logits, labels)
    student_accuracy = accuracy(student_logits, labels)
    return {
        "teacher_accuracy": teacher_accuracy,
        "student_accuracy": student_accuracy,
        "agreement": agreement,
        "accuracy_retention": student_accuracy / teacher_accuracy if teacher_accuracy > 0 else None,
    }


def final_metrics(
    teacher_logits: Tensor,
    student_logits: Tensor,
    labels: Tensor | None,
    teacher_parameters: int,
    student_parameters: int,
) -> dict:
    """The job's headline result, as stored and returned by the API."""
    scores = classification_metrics(teacher_logits, student_logits, labels)
    return {
        "teacher": {"accuracy": scores["teacher_accuracy"], "parameters": teacher_parameters},
        "student": {"accuracy": scores["student_accuracy"], "parameters": student_parameters},
        "agreement": scores["agreement"],
        "accuracy_retention": scores["accuracy_retention"],
        "compression": teacher_parameters / student_parameters,
    }
