"""Divergences between the teacher's and the student's next-token distributions, one per row.

Each takes log-probabilities `[tokens, outcomes]` over the same outcomes (the vocabulary, or the top-k
buckets of `top_k`) and returns `[tokens]`. An outcome of probability 0 (log-probability -inf, as the empty
"rest" bucket when k covers the vocabulary) adds nothing and gives no NaN, in value or gradient.
"""

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

Divergence = Callable[[Tensor, Tensor], Tensor]  # (teacher log-probs, student log-probs) -> [tokens]


def floored(log_probs: Tensor) -> Tensor:
    """Log-probabilities with -inf raised to the dtype's lowest finite value: a probability of 0 still, whose
    terms below are 0 * finite = 0, with finite gradients, where -inf would make them NaN."""
    return log_probs.clamp(min=torch.finfo(log_probs.dtype).min)


def kl_divergence(p_log: Tensor, q_log: Tensor) -> Tensor:
    """KL(p || q) = sum_i p_i (log p_i - log q_i) of each row, from `floored` log-probabilities."""
    return (p_log.exp() * (p_log - q_log)).sum(dim=-1)


def forward_kl(teacher: Tensor, student: Tensor) -> Tensor:
    """KL(teacher || student): mass-covering, Hinton's KD."""
    return kl_divergence(floored(teacher), floored(student))


def reverse_kl(teacher: Tensor, student: Tensor) -> Tensor:
    """KL(student || teacher): mode-seeking (MiniLLM)."""
    return kl_divergence(floored(student), floored(teacher))


def generalized_jsd(teacher: Tensor, student: Tensor, beta: float) -> Tensor:
    """The generalized Jensen-Shannon divergence of GKD (Agarwal et al. 2024, Eq. 1), in TRL's convention
    (`GKDTrainer.generalized_jsd_loss`, trl/trainer/gkd_trainer.py; its `beta`):

        M = beta * p_teacher + (1 - beta) * p_student, formed in log space (a logaddexp, as TRL's logsumexp)
        JSD_beta = beta * KL(p_teacher || M) + (1 - beta) * KL(p_student || M)

    except at the ends, which TRL defines apart: beta = 0 is the forward KL(teacher || student) and beta = 1
    the reverse KL(student || teacher). The formula itself tends to 0 at both ends (JSD_beta ~ beta *
    KL(teacher || student) as beta -> 0, ~ (1 - beta) * KL(student || teacher) as beta -> 1), so the loss
    jumps at 0 and 1: near an end `beta` scales the loss rather than choosing its direction. beta = 0.5 is
    the symmetric Jensen-Shannon divergence (TRL's GKDConfig default).
    """
    if not 0 <= beta <= 1:
        raise ValueError(f"the generalized JSD's beta must be in [0, 1]; got {beta}")
    if beta == 0:
        return forward_kl(teacher, student)
    if beta == 1:
        return reverse_kl(teacher, student)
    teacher, student = floored(teacher), floored(student)
    mixture = torch.logaddexp(teacher + math.log(beta), student + math.log1p(-beta))
    return beta * kl_divergence(teacher, mixture) + (1 - beta) * kl_divergence(student, mixture)


# Each divergence by its name, built from the generalized JSD's beta (which only "jsd" reads).
TOKEN_DIVERGENCES: dict[str, Callable[[float], Divergence]] = {
    "forward_kl": lambda _beta: forward_kl,
    "reverse_kl": lambda _beta: reverse_kl,
    "jsd": lambda beta: partial(generalized_jsd, beta=beta),
}
