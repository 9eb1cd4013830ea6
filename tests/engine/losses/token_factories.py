"""A tiny language-model batch for the token-level losses, and the divergences written out in numpy, float64,
from their definitions (independently of the engine's code)."""

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from engine.losses.token_divergences import TOKEN_DIVERGENCES
from engine.losses.token_level import (
    IGNORE_INDEX,
    LMHead,
    TeacherHead,
    TeacherTokens,
    TokenLosses,
    token_level_losses,
)

VOCAB = 97  # a size no other dimension shares, so a shape shows which dimension is the vocabulary
HIDDEN = 16
TEACHER_HIDDEN = 24
TOKENS = 60
PROMPT = 10  # the first tokens are a prompt, the last PADDING padding: neither counts
PADDING = 5
COUNTED = TOKENS - PROMPT - PADDING
DIVERGENCES = ["forward_kl", "reverse_kl", "jsd"]
JSD_BETA = 0.3  # not 0.5, where the generalized JSD is symmetric and would hide a swap of its sides


@dataclass
class TokenBatch:
    """The student's final hidden states (with gradient) and LM head (with a bias), the teacher's, and labels
    drawn from the teacher's distribution, IGNORE_INDEX on the prompt and the padding."""

    hidden: Tensor
    head: nn.Linear
    teacher_hidden: Tensor
    teacher_head: nn.Linear
    labels: Tensor

    @property
    def teacher(self) -> TeacherHead:
        return TeacherHead(self.teacher_hidden, LMHead.of(self.teacher_head))

    def teacher_logits(self) -> Tensor:
        with torch.no_grad():
            return self.teacher_head(self.teacher_hidden)

    def student_logits(self) -> Tensor:
        return self.head(self.hidden)

    def parameters(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.hidden, self.head.weight, self.head.bias


def token_batch(seed: int = 0) -> TokenBatch:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head, teacher_head = nn.Linear(HIDDEN, VOCAB), nn.Linear(TEACHER_HIDDEN, VOCAB)
    hidden = torch.randn(TOKENS, HIDDEN, generator=generator).requires_grad_()
    teacher_hidden = 3 * torch.randn(TOKENS, TEACHER_HIDDEN, generator=generator)  # a peaked teacher
    with torch.no_grad():
        labels = torch.multinomial(teacher_head(teacher_hidden).softmax(dim=-1), 1, generator=generator)
    labels = labels.squeeze(-1)
    labels[:PROMPT] = IGNORE_INDEX
    labels[TOKENS - PADDING :] = IGNORE_INDEX
    return TokenBatch(hidden, head, teacher_hidden, teacher_head, labels)


def losses(
    batch: TokenBatch,
    *,
    divergence: str = "jsd",
    teacher: TeacherTokens | None = None,
    temperature: float = 2.0,
    chunk_tokens: int = 16,
) -> TokenLosses:
    return token_level_losses(
        hidden=batch.hidden,
        head=LMHead.of(batch.head),
        labels=batch.labels,
        teacher=batch.teacher if teacher is None else teacher,
        divergence=TOKEN_DIVERGENCES[divergence](JSD_BETA),
        temperature=temperature,
        chunk_tokens=chunk_tokens,
    )


def gradients(value: Tensor, batch: TokenBatch) -> tuple[Tensor, ...]:
    return torch.autograd.grad(value, batch.parameters(), retain_graph=True)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    exps = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    return exps / exps.sum(axis=-1, keepdims=True)


def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) of each row; 0 log 0 = 0."""
    terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(np.where(p > 0, q, 1))), 0.0)
    return terms.sum(axis=-1)


def reference_divergence(name: str, teacher: np.ndarray, student: np.ndarray, beta: float = JSD_BETA):
    """Each row's divergence between probabilities, TRL's GKD convention: the mixture formed on the
    probabilities themselves, m = beta * teacher + (1 - beta) * student, beta * KL(teacher || m) +
    (1 - beta) * KL(student || m); forward KL is KL(teacher || student), reverse KL(student || teacher)."""
    if name == "forward_kl":
        return kl(teacher, student)
    if name == "reverse_kl":
        return kl(student, teacher)
    mixture = beta * teacher + (1 - beta) * student
    return beta * kl(teacher, mixture) + (1 - beta) * kl(student, mixture)
