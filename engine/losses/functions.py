"""Distillation losses. Response losses compare the student's logits with the teachers' (Hinton et al.
2015, and the variants `soft_loss` chooses); feature losses compare intermediate layers (FitNets, Romero et
al. 2015).

Response losses take every teacher's logits at once, so one teacher and an ensemble share one path.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.plan.specs import DistillationConfig, DISTWeights, DKDWeights


def standardized_logits(logits: Tensor) -> Tensor:
    """Each sample's logits z-scored over the classes, (z - mean) / (std + 1e-7), in float32 (Sun et al.
    2024, "Logit Standardization in Knowledge Distillation"); std with Bessel's correction, as in the paper's
    code."""
    logits = logits.float()  # mean and std stay in bfloat16 under autocast, unlike softmax
    return (logits - logits.mean(dim=-1, keepdim=True)) / (logits.std(dim=-1, keepdim=True) + 1e-7)


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

    def standardized(self) -> "TeacherOutputs":
        return TeacherOutputs(standardized_logits(self.logits), self.weights)


@dataclass(frozen=True)
class ResponseBatch:
    """What a response loss compares on one batch: the student's logits `[batch, classes]`, the teachers'
    outputs, the temperature T, and the labels (None for unlabeled data)."""

    student_logits: Tensor
    teachers: TeacherOutputs
    temperature: float
    labels: Tensor | None = None

    def student_log_probabilities(self) -> Tensor:
        return F.log_softmax(self.student_logits / self.temperature, dim=-1)

    def teacher_log_probabilities(self) -> Tensor:
        """The teachers' mixture at T: one teacher's softened distribution, or several's weighted average."""
        return self.teachers.log_probabilities(self.temperature)

    def standardized(self) -> "ResponseBatch":
        """The batch with the student's and every teacher's logits z-scored (logit standardisation)."""
        student_logits = standardized_logits(self.student_logits)
        return replace(self, student_logits=student_logits, teachers=self.teachers.standardized())


def mean_kl(target_log_probs: Tensor, student_log_probs: Tensor) -> Tensor:
    """KL(target || student) of each row, from log-probabilities, averaged over the batch."""
    return F.kl_div(student_log_probs, target_log_probs, reduction="batchmean", log_target=True)


def kl_loss(batch: ResponseBatch) -> Tensor:
    """KL(teachers' softened distribution || student's) * T^2, averaged over the batch.

    The T^2 factor keeps this term's gradients on the same scale whatever T (Hinton et al. §2.1), so
    `alpha` and `beta` mean the same at any temperature. Some toolkits leave it out.
    """
    kl = mean_kl(batch.teacher_log_probabilities(), batch.student_log_probabilities())
    return kl * batch.temperature**2


def cross_entropy_loss(batch: ResponseBatch) -> Tensor:
    """Cross-entropy with the softened teacher distribution, * T^2: the KL plus the teachers' entropy,
    a constant, so the same gradients with a loss value that does not reach 0."""
    target = batch.teacher_log_probabilities().exp()
    return -(target * batch.student_log_probabilities()).sum(dim=-1).mean() * batch.temperature**2


def logit_mse_loss(batch: ResponseBatch) -> Tensor:
    """Squared error between logits (Ba & Caruana 2014): the high-temperature limit of the KL.
    MSE(s/T, t/T) * T^2 is MSE(s, t), so T has no effect here."""
    return F.mse_loss(batch.student_logits, batch.teachers.mean_logits())


def decoupled_kd_loss(batch: ResponseBatch, weights: DKDWeights) -> Tensor:
    """Decoupled KD (Zhao et al. 2022, "Decoupled Knowledge Distillation"): with p the distributions at T and
    t the target class,

        TCKD = KL(b_teacher || b_student), b = [p_t, 1 - p_t]: target class against all the others
        NCKD = KL(q_teacher || q_student), q = p over the classes other than t, renormalised
        loss = (target_weight * TCKD + non_target_weight * NCKD) * T^2

    Hinton's KL is TCKD + (1 - p_t of the teacher) * NCKD. The target class is the label; on unlabeled data,
    the class the teachers' distribution ranks first. The teacher distribution is the teachers' mixture.
    """
    student, teacher = batch.student_log_probabilities(), batch.teacher_log_probabilities()
    target = batch.labels if batch.labels is not None else teacher.argmax(dim=-1)
    student_binary, student_others = split_at_target(student, target)
    teacher_binary, teacher_others = split_at_target(teacher, target)
    tckd, nckd = mean_kl(teacher_binary, student_binary), mean_kl(teacher_others, student_others)
    return (weights.target_weight * tckd + weights.non_target_weight * nckd) * batch.temperature**2


def split_at_target(log_probs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """From log-probabilities `[batch, classes]`: log [p_t, 1 - p_t] `[batch, 2]`, and the log of the
    distribution over the other classes `[batch, classes - 1]`.

    The target class is left out exactly, where the paper's code subtracts 1000 from its logit."""
    is_target = F.one_hot(target, log_probs.shape[-1]).bool()
    others = log_probs[~is_target].view(len(log_probs), -1)
    binary = torch.stack([log_probs[is_target], others.logsumexp(dim=-1)], dim=-1)
    return binary, F.log_softmax(others, dim=-1)


def dist_loss(batch: ResponseBatch, weights: DISTWeights) -> Tensor:
    """DIST (Huang et al. 2022, "Knowledge Distillation from A Stronger Teacher"): the student matches the
    relations among the teacher's probabilities p = softmax(z / T) rather than their values,

        inter = 1 - mean over samples i of pearson(p_student[i, :], p_teacher[i, :])
        intra = 1 - mean over classes c of pearson(p_student[:, c], p_teacher[:, c]): inter, transposed
        loss = inter_weight * (T^2 * inter) + intra_weight * (T^2 * intra)

    as the authors' code (DIST_KD) computes it, epsilon included. The teacher probabilities are the
    teachers' mixture.
    """
    student = batch.student_log_probabilities().exp()
    teacher = batch.teacher_log_probabilities().exp()
    squared_temperature = batch.temperature**2
    inter = squared_temperature * relation_loss(student, teacher)
    intra = squared_temperature * relation_loss(student.T, teacher.T)
    return weights.inter_weight * inter + weights.intra_weight * intra


def relation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """1 - the mean over rows of Pearson's r between the student's and the teacher's rows (DIST's
    inter-class relation of samples' rows, its intra-class relation of the transposed classes' rows)."""
    return 1 - pearson_correlation(student, teacher).mean()


PEARSON_EPSILON = 1e-8  # added to the norms' product, as the authors' code adds it


def pearson_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Pearson's r between each row of `a` and of `b`: the centred rows' dot product over the product of
    their norms plus 1e-8 (0 where one is constant). Not `F.cosine_similarity`, which bounds each norm
    below instead: the two differ where the centred probabilities are tiny (peaked or near-uniform)."""
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + PEARSON_EPSILON)


ResponseLoss = Callable[[ResponseBatch], Tensor]

# Each soft loss, built from the job's distillation settings (DKD's and DIST's weights).
RESPONSE_LOSSES: dict[str, Callable[[DistillationConfig], ResponseLoss]] = {
    "kl": lambda _config: kl_loss,
    "ce": lambda _config: cross_entropy_loss,
    "mse": lambda _config: logit_mse_loss,
    "dkd": lambda config: partial(decoupled_kd_loss, weights=config.dkd),
    "dist": lambda config: partial(dist_loss, weights=config.dist),
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
