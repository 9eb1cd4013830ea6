"""The teacher's next-token distribution kept as its top k tokens and the rest of the vocabulary's mass,
what the teacher-output cache stores per position for a language model (k + 1 numbers where the logits
are a vocabulary's worth).

The divergence is then taken over k + 1 outcomes: the teacher's k tokens and "the rest". The student's
distribution is aggregated onto the same buckets (its log-probabilities of those k tokens, and the
logsumexp of its log-probabilities over all the other tokens), so both sides are proper distributions and
the divergence a proper one: >= 0, and 0 where the two agree on the buckets.

What is exact, and what is not:
- At T = 1 the k + 1 buckets of either side are exact (the teacher's up to the float16 rounding of what is
  stored, after which they are renormalised). The divergence between the bucketed distributions is at most
  the full one (coarse-graining never increases an f-divergence, and the KLs and the generalized JSD are
  f-divergences), and equals it when k covers the vocabulary.
- At T != 1 a token's softened probability p_i^(1/T) / sum_j p_j^(1/T) needs the sum over the whole
  vocabulary, which the rest's total mass does not give. Each side's k + 1 buckets are softened as k + 1
  outcomes, the rest as one of mass r (r^(1/T) in place of the sum over its tokens), as DistillKit's
  `symmetric_uniform` does for the teacher. The ratios among the k tokens, (p_i / p_j)^(1/T), are exact; the
  share the rest takes is not: r^(1/T) is below the sum for T > 1 and above it for T < 1, so the rest gets
  less than its exact share above T = 1 and more below (exact when k covers the vocabulary). The student is
  softened the same way, so the divergence stays proper at any T.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# Log-probabilities are stored in float16: a stored value's error is at most 2^-11 of its size, so a
# probability's relative error is at most |log p| * 4.9e-4 (0.05% at p = 1/e, 0.4% at p = e^-8), 8x less
# than bfloat16's; any log-probability >= -65504 fits, and smaller ones round to -inf (a probability of 0).
STORED_LOG_PROBS = torch.float16
TOKEN_IDS = torch.int32  # vocabularies outgrow int16 (Llama 3's has 128k tokens)


def bucket_log_probs(log_probs: Tensor, token_ids: Tensor) -> Tensor:
    """From log-probabilities over the vocabulary `[tokens, vocab]`, those of k+1 outcomes `[tokens, k + 1]`:
    the `token_ids` `[tokens, k]`, then the rest of the vocabulary.

    The rest is the log of the other tokens' summed probabilities, exact where log(1 - sum of the k) would
    cancel, and never below the log of the smallest normal number; where k covers the vocabulary it is the
    dtype's lowest value, a probability of exactly 0 with finite gradients.
    """
    return _Buckets.apply(log_probs, token_ids.long())


class _Buckets(torch.autograd.Function):
    """`bucket_log_probs` in two passes over `[tokens, vocab]` forward and one backward: a training step's
    costliest part besides the LM head. autograd's own graph of it (a scatter, a logsumexp, a gather) took
    four times as long, its logsumexp alone 40% of a top-k step (160 of 390 ms at 4,096 tokens x 2,048).

    The other tokens' probabilities are summed directly (exact whatever their mass, where 1 minus the k's
    sum would cancel), and kept: the rest's gradient is their shares of its mass; the k tokens' pass
    straight through. In float32 their sum underflows only below 1e-38: the rest's probability is then held
    at the smallest normal number (its log at -87.3), so that a teacher's rest of any mass costs a finite
    divergence, unless the k cover the vocabulary, where it is 0 (the dtype's lowest log-probability)."""

    @staticmethod
    def forward(ctx, log_probs: Tensor, token_ids: Tensor) -> Tensor:
        others = log_probs.exp().scatter_(-1, token_ids, 0.0)
        mass = others.sum(dim=-1, keepdim=True)
        limits = torch.finfo(log_probs.dtype)
        covered = token_ids.shape[-1] == log_probs.shape[-1]
        rest = mass.log().clamp_min(limits.min if covered else math.log(limits.tiny))
        ctx.save_for_backward(token_ids, others, mass)
        return torch.cat([log_probs.gather(-1, token_ids), rest], dim=-1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        token_ids, others, mass = ctx.saved_tensors
        k = token_ids.shape[-1]
        # d rest / d log p_j = p_j / (the rest's mass) over the other tokens, 0 for the k
        grad_log_probs = others * (grad[:, k:] / mass.clamp_min(torch.finfo(mass.dtype).tiny))
        return grad_log_probs.scatter_(-1, token_ids, grad[:, :k]), None


def softened(log_probs: Tensor, temperature: float) -> Tensor:
    """Log of p^(1/T) renormalised over the last dimension's outcomes: at T = 1, the renormalised input."""
    return F.log_softmax(log_probs.float() / temperature, dim=-1)


@dataclass(frozen=True)
class TopKTeacher:
    """Per token, the teacher's k most likely tokens `token_ids` `[tokens, k]`, and `log_probs`
    `[tokens, k + 1]`: the log-probabilities at T = 1 of those k tokens, then of the rest of the vocabulary
    (a probability of 0 where k covers it)."""

    token_ids: Tensor
    log_probs: Tensor

    def chunk(self, positions: Tensor) -> "TopKTeacher":
        """The rows at `positions`."""
        return TopKTeacher(
            self.token_ids.index_select(0, positions), self.log_probs.index_select(0, positions)
        )

    def distributions(self, student_log_probs: Tensor, *, temperature: float) -> tuple[Tensor, Tensor]:
        """The teacher's and the student's log-probabilities over the k + 1 buckets, softened at T, from the
        student's over the vocabulary at T = 1."""
        student = bucket_log_probs(student_log_probs, self.token_ids)
        return softened(self.log_probs, temperature), softened(student, temperature)

    def top_tokens(self) -> Tensor:
        """The teacher's most likely token of each row."""
        best = self.log_probs[:, :-1].argmax(dim=-1, keepdim=True)
        return self.token_ids.gather(-1, best).squeeze(-1).long()


@torch.no_grad()
def top_k_teacher(logits: Tensor, k: int, log_prob_dtype: torch.dtype = STORED_LOG_PROBS) -> TopKTeacher:
    """The top-k form of the teacher's logits `[tokens, vocab]`, as the cache stores it: int32 token ids,
    log-probabilities at T = 1 in `log_prob_dtype` (float16 unless asked)."""
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"k must be between 1 and the vocabulary's {logits.shape[-1]} tokens; got {k}")
    log_probs = F.log_softmax(logits.float(), dim=-1)
    token_ids = log_probs.topk(k, dim=-1).indices
    buckets = bucket_log_probs(log_probs, token_ids)
    return TopKTeacher(token_ids.to(TOKEN_IDS), buckets.to(log_prob_dtype))
