"""The knowledge-distillation loss of Hinton et al. (2015), "Distilling the Knowledge in a Neural Network"."""

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from worker.engine.specs import DistillationConfig


@dataclass(frozen=True)
class LossTerms:
    total: Tensor
    soft: Tensor
    hard: Tensor | None  # None when the batch has no labels


def soft_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, averaged over the batch.

    The T^2 factor keeps the gradient scale of this term independent of T, so `alpha` and `beta`
    mean the same thing at any temperature. Both sides stay in log space for numerical stability.
    """
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return kl * temperature**2


def hard_loss(student_logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(student_logits, labels)


def distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None, config: DistillationConfig
) -> LossTerms:
    """alpha * soft + beta * hard.

    Without labels the hard term is skipped (total = alpha * soft) whatever `beta` is. Unlabeled
    data with alpha == 0 would leave nothing to learn from: the pipeline refuses that job up front
    with the error code `labels_required`.
    """
    soft = soft_loss(student_logits, teacher_logits, config.temperature)
    if labels is None:
        return LossTerms(total=config.alpha * soft, soft=soft, hard=None)
    hard = hard_loss(student_logits, labels)
    return LossTerms(total=config.alpha * soft + config.beta * hard, soft=soft, hard=hard)
