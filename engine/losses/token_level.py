"""Token-level distillation of a causal language model, chunked over the tokens so that memory is bounded
by one chunk of `[tokens, vocab]` logits, not the sequence's.

The student's logits are never formed for all tokens at once: from its final hidden states and LM head,
each chunk of tokens gets its logits, its divergence to the teacher and its next-token cross-entropy inside
`torch.utils.checkpoint`, which keeps no activation of the chunk for backward but recomputes them there
(the student's and the teacher's chunk logits: one more LM-head pass of each). The teacher comes as its
logits (`TeacherLogits`), its hidden states and LM head (`TeacherHead`, computed a chunk at a time too) or
its top-k form (`top_k.TopKTeacher`: from the cache, or `TopKHead`, formed a chunk at a time as the cache
forms it).

Only the tokens whose label is not `IGNORE_INDEX` count, in every term: padding, and the prompt where the
data has prompts and completions.
"""

from dataclasses import dataclass
from functools import partial
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from engine.data.lm_text import IGNORE_INDEX
from engine.losses.token_divergences import Divergence, forward_kl
from engine.losses.top_k import TopKTeacher, softened, top_k_teacher

# Unless asked otherwise, a chunk holds as many tokens as make 2^24 logits (64 MiB in float32; the peak holds
# about a dozen such [chunk, vocab] tensors, the JSD's backward the most): memory does not grow with the
# vocabulary, and a chunk has 512 tokens at a vocabulary of 32,768, 110 at Qwen2's 151,936.
CHUNK_LOGITS = 2**24


def default_chunk_tokens(vocab: int) -> int:
    return max(1, CHUNK_LOGITS // vocab)


@dataclass(frozen=True)
class LMHead:
    """A model's output projection: logits = hidden @ weight.T + bias, weight `[vocab, hidden]`."""

    weight: Tensor
    bias: Tensor | None = None

    @classmethod
    def of(cls, linear: nn.Linear) -> "LMHead":
        return cls(linear.weight, linear.bias)

    def logits(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden, self.weight, self.bias)


class TeacherChunk(Protocol):
    """The teacher on one chunk of tokens."""

    def distributions(self, student_log_probs: Tensor, *, temperature: float) -> tuple[Tensor, Tensor]:
        """The teacher's and the student's log-probabilities at T over the same outcomes, from the student's
        over the vocabulary at T = 1 (float32)."""

    def top_tokens(self) -> Tensor:
        """The teacher's most likely token of each row."""


class TeacherTokens(Protocol):
    """The teacher on every token, handed out a chunk at a time."""

    def chunk(self, positions: Tensor) -> TeacherChunk: ...


@dataclass(frozen=True)
class TeacherLogits:
    """The teacher's logits `[tokens, vocab]`."""

    logits: Tensor

    def chunk(self, positions: Tensor) -> "TeacherLogits":
        return TeacherLogits(self.logits.detach().index_select(0, positions))

    def distributions(self, student_log_probs: Tensor, *, temperature: float) -> tuple[Tensor, Tensor]:
        """Both sides' log-softmax over the vocabulary at T."""
        teacher = F.log_softmax(self.logits.float() / temperature, dim=-1)
        return teacher, student_log_probs if temperature == 1 else softened(student_log_probs, temperature)

    def top_tokens(self) -> Tensor:
        return self.logits.argmax(dim=-1)


@dataclass(frozen=True)
class TeacherHead:
    """The teacher's final hidden states `[tokens, hidden]` and its LM head: its logits, a chunk at a time."""

    hidden: Tensor
    head: LMHead

    @torch.no_grad()
    def chunk(self, positions: Tensor) -> TeacherLogits:
        return TeacherLogits(self.head.logits(self.hidden.index_select(0, positions)))


@dataclass(frozen=True)
class TopKHead:
    """The teacher's final hidden states and LM head read in its top-k form, a chunk at a time: the values
    the cache keeps for those tokens (`top_k_teacher` of their logits, its float16 rounding included)."""

    hidden: Tensor
    head: LMHead
    k: int

    @torch.no_grad()
    def chunk(self, positions: Tensor) -> TopKTeacher:
        return top_k_teacher(self.head.logits(self.hidden.index_select(0, positions)), self.k)


@dataclass(frozen=True)
class TokenLosses:
    """Means over the tokens that count (0 where none does); the teacher's three are None without a teacher.

    cross_entropy: the student's next-token cross-entropy with the labels; with gradient
    accuracy: the share of tokens whose label is the student's most likely token; without gradient
    tokens: how many tokens counted
    divergence: D(teacher_T || student_T) * T^2, the T^2 keeping its gradients' scale whatever T, as the
        classifiers' KD (`functions.kl_loss`) does; with gradient
    kl_to_teacher: KL(teacher || student) at T = 1, over the same outcomes as the divergence (the top-k
        buckets for a top-k teacher, where it is a lower bound of the full KL); without gradient
    top1_agreement: the share of tokens where the student's most likely token is the teacher's; without
    """

    cross_entropy: Tensor
    accuracy: Tensor
    tokens: int
    divergence: Tensor | None = None
    kl_to_teacher: Tensor | None = None
    top1_agreement: Tensor | None = None


def token_level_losses(
    *,
    hidden: Tensor,
    head: LMHead,
    labels: Tensor,
    teacher: TeacherTokens | None,
    divergence: Divergence,
    temperature: float,
    chunk_tokens: int | None = None,
) -> TokenLosses:
    """The token-level losses of a batch, `chunk_tokens` tokens at a time (`default_chunk_tokens`
    unless given).

    hidden: the student's final hidden states `[tokens, hidden]` (the batch's sequences flattened);
    labels: `[tokens]`, each token's next token, `IGNORE_INDEX` where it does not count; teacher: on the
    same `[tokens]`, or None for the cross-entropy and accuracy only; divergence: one of
    `token_divergences.TOKEN_DIVERGENCES`.
    """
    if chunk_tokens is None:
        chunk_tokens = default_chunk_tokens(len(head.weight))
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1; got {chunk_tokens}")
    positions = (labels != IGNORE_INDEX).nonzero().squeeze(-1)
    totals: dict[str, Tensor | float] = {}
    chunks = positions.split(chunk_tokens)  # one empty chunk where no token counts: zeros with a graph
    for number, chunk in enumerate(chunks, start=1):
        # The last chunk's activations are the first that the backward pass frees, before it recomputes any
        # other chunk's: kept, they cost no more memory than a recomputed chunk, and save its recomputation.
        last = number == len(chunks)
        compute = chunk_sums if last else partial(checkpoint, chunk_sums, use_reentrant=False)
        sums = compute(
            hidden,
            chunk,
            head=head,
            labels=labels,
            teacher=teacher,
            divergence=divergence,
            temperature=temperature,
        )
        totals = {name: totals.get(name, 0.0) + value for name, value in sums.items()}
    tokens = positions.numel()
    return TokenLosses(**{name: total / max(tokens, 1) for name, total in totals.items()}, tokens=tokens)


def chunk_sums(
    hidden: Tensor,
    positions: Tensor,
    *,
    head: LMHead,
    labels: Tensor,
    teacher: TeacherTokens | None,
    divergence: Divergence,
    temperature: float,
) -> dict[str, Tensor]:
    """The sums over the tokens at `positions` of the cross-entropy and the correct predictions and, with a
    teacher, of the divergence * T^2, the KL at T = 1 and the top-1 agreements; named as `TokenLosses`'
    fields, those but the cross-entropy and the divergence without gradient."""
    # The student's log-probabilities, computed once for the cross-entropy and the divergence
    log_probs = F.log_softmax(head.logits(hidden.index_select(0, positions)).float(), dim=-1)
    targets = labels.index_select(0, positions)
    with torch.no_grad():
        # Each row's largest, which a token's is compared with: a seventh of an argmax's time on the CPU; a
        # tie counts for each of its tokens.
        largest = log_probs.amax(dim=-1)
    sums = {
        "cross_entropy": F.nll_loss(log_probs, targets, reduction="sum"),
        "accuracy": _equal_rows(log_probs, targets, largest),
    }
    if teacher is None:
        return sums
    teacher_chunk = teacher.chunk(positions)
    teacher_log_probs, student_log_probs = teacher_chunk.distributions(log_probs, temperature=temperature)
    sums["divergence"] = divergence(teacher_log_probs, student_log_probs).sum() * temperature**2
    with torch.no_grad():
        at_one = (
            (teacher_log_probs, student_log_probs)
            if temperature == 1
            else teacher_chunk.distributions(log_probs, temperature=1.0)
        )
        sums["kl_to_teacher"] = forward_kl(*at_one).sum()
        sums["top1_agreement"] = _equal_rows(log_probs, teacher_chunk.top_tokens(), largest)
    return sums


@torch.no_grad()
def _equal_rows(log_probs: Tensor, tokens: Tensor, values: Tensor) -> Tensor:
    """How many rows give their token (one per row) these values."""
    return (log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) == values).sum().float()
