"""Predictions and the metrics that compare the student with its teacher: a classifier's on its predictions, a
causal language model's token by token."""

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from engine.data.arrays import ArrayDataset, iterate_batches
from engine.data.lm_text import LMDataset
from engine.losses.token_divergences import forward_kl
from engine.losses.token_level import LMHead, TeacherHead, TeacherTokens, TopKHead, token_level_losses


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


class CausalLM(Protocol):
    """`engine.models.hf.wrappers.HFCausalLM`: token ids and mask -> final hidden states, and its LM head."""

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor: ...

    def lm_head(self) -> nn.Linear: ...


def head_of(model: CausalLM) -> LMHead:
    return LMHead.of(model.lm_head())


def flat_hidden(model: CausalLM, batch: LMDataset) -> Tensor:
    """The model's final hidden states of the batch's tokens, `[tokens, hidden]`."""
    return model(batch.ids, batch.attention_mask).flatten(0, 1)


def teacher_tokens(teacher: CausalLM, batch: LMDataset, top_k: int | None = None) -> TeacherHead | TopKHead:
    """The teacher on the batch's tokens, its logits formed a chunk at a time by the losses: over the whole
    vocabulary, or read as its `top_k` tokens and the rest's mass."""
    with torch.no_grad():
        hidden, head = flat_hidden(teacher, batch), head_of(teacher)
    return TeacherHead(hidden, head) if top_k is None else TopKHead(hidden, head, top_k)


class BlockTeacher(Protocol):
    """The teacher over one dataset's blocks, as the losses read it."""

    def tokens(self, index: slice | Tensor, batch: LMDataset) -> TeacherTokens:
        """The teacher on the tokens of `batch`, the dataset's blocks at `index`."""


@dataclass(frozen=True)
class LiveTeacher:
    """The teacher run on each batch (`teacher_tokens`); `teachers.lm_cache.CachedTopK` reads the same
    top-k values from its table."""

    model: CausalLM
    top_k: int | None = None

    def tokens(self, index: slice | Tensor, batch: LMDataset) -> TeacherTokens:
        return teacher_tokens(self.model, batch, self.top_k)


@torch.no_grad()
def token_scores(
    student: CausalLM, teacher: BlockTeacher, data: LMDataset, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Over the tokens of `data` whose label counts: `perplexity` (exp of the mean next-token cross-entropy),
    `accuracy` (next-token), `kl_to_teacher` (the mean KL(teacher || student), nats; over the top-k buckets
    for a top-k teacher, a lower bound of the full KL) and `agreement` (the share where both models' most
    likely token is the same); `tokens` counted. Measuring the teacher against itself (`LiveTeacher`) gives
    its own perplexity and accuracy."""
    sums, tokens = {"cross_entropy": 0.0, "accuracy": 0.0, "kl_to_teacher": 0.0, "agreement": 0.0}, 0
    with evaluating(student):  # a teacher is frozen in eval mode
        for start in range(0, len(data), batch_size):
            index = slice(start, start + batch_size)
            batch = data.take(index, device)
            losses = token_level_losses(
                hidden=flat_hidden(student, batch),
                head=head_of(student),
                labels=batch.labels.flatten(),
                teacher=teacher.tokens(index, batch),
                divergence=forward_kl,
                temperature=1.0,
            )
            counted = {
                "cross_entropy": losses.cross_entropy,
                "accuracy": losses.accuracy,
                "kl_to_teacher": losses.kl_to_teacher,
                "agreement": losses.top1_agreement,
            }
            for name, value in counted.items():
                sums[name] += float(value) * losses.tokens
            tokens += losses.tokens
    means = {name: total / max(tokens, 1) for name, total in sums.items()}
    return {
        "perplexity": math.exp(min(means.pop("cross_entropy"), 700.0)),  # exp(>709) overflows a float
        **means,
        "tokens": tokens,
    }
