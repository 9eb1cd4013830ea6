"""Distillation losses. Response losses compare the student's logits with the teachers' (Hinton et al.
2015); feature losses compare intermediate layers (FitNets, Romero et al. 2015).

Response losses take every teacher's logits at once, so one teacher and an ensemble share one path.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class TeacherOutputs:
    """The teachers' logits on one batch, `[teachers, batch, classes]`, and their weights (summing to 1)."""

    logits: Tensor
    weights: Tensor

    @classmethod
    def single(cls, logits: Tensor) -> "TeacherOutputs":
        return cls(logits.unsqueeze(0), torch.ones(1, device=logits.device))

    def log_probabilities(self, temperature: float) -> Tensor:
        """log of the weighted mixture of the softened distributions, computed in log space."""
        log_probs = F.log_softmax(self.logits / temperature, dim=-1)
        if len(log_probs) == 1:  # the mixture of one: what the logsumexp below gives, bit for bit
            return log_probs[0]
        return torch.logsumexp(log_probs + self.weights.log().view(-1, 1, 1), dim=0)

    def mean_logits(self) -> Tensor:
        return (self.logits * self.weights.view(-1, 1, 1)).sum(dim=0)


def kl_loss(student_logits: Tensor, teachers: TeacherOutputs, temperature: float) -> Tensor:
    """KL(teachers' softened distribution || student's) * T^2, averaged over the batch.

    The T^2 factor keeps this term's gradients on the same scale whatever T (Hinton et al. §2.1), so
    `alpha` and `beta` mean the same at any temperature. Some toolkits leave it out.
    """
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    target_log_probs = teachers.log_probabilities(temperature)
    kl = F.kl_div(student_log_probs, target_log_probs, reduction="batchmean", log_target=True)
    return kl * temperature**2


def cross_entropy_loss(student_logits: Tensor, teachers: TeacherOutputs, temperature: float) -> Tensor:
    """Cross-entropy with the softened teacher distribution, * T^2: the KL plus the teachers' entropy,
    a constant, so the same gradients with a loss value that does not reach 0."""
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    target = teachers.log_probabilities(temperature).exp()
    return -(target * student_log_probs).sum(dim=-1).mean() * temperature**2


def logit_mse_loss(student_logits: Tensor, teachers: TeacherOutputs, temperature: float) -> Tensor:
    """Squared error between logits (Ba & Caruana 2014): the high-temperature limit of the KL.
    MSE(s/T, t/T) * T^2 is MSE(s, t), so T has no effect here."""
    return F.mse_loss(student_logits, teachers.mean_logits())


RESPONSE_LOSSES: dict[str, Callable[[Tensor, TeacherOutputs, float], Tensor]] = {
    "kl": kl_loss,
    "ce": cross_entropy_loss,
    "mse": logit_mse_loss,
}


def hard_loss(student_logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(student_logits, labels)


def feature_mse(student: Tensor, teacher: Tensor) -> Tensor:
    return F.mse_loss(student, teacher)


def feature_cosine(student: Tensor, teacher: Tensor) -> Tensor:
    """1 - cosine similarity of the flattened features, averaged over the batch."""
    return 1 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1).mean()


FEATURE_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mse": feature_mse, "cosine": feature_cosine}


def scheduled_temperature(start: float, end: float | None, kind: str, progress: float) -> float:
    """T at `progress` (0 at the first step, 1 at the last): constant without `end`."""
    if end is None:
        return start
    if kind == "cosine":
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))
    return start + (end - start) * progress
