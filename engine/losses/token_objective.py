"""A causal language model student's loss: the token-level divergence to the teacher at T, times T^2, weighted
by `alpha`, plus the next-token cross-entropy weighted by `beta` (Hinton's recipe, token by token), computed a
chunk of tokens at a time (`token_level`)."""

from torch import Tensor, nn

from engine.losses.token_divergences import TOKEN_DIVERGENCES
from engine.losses.token_level import LMHead, TeacherTokens, token_level_losses
from engine.plan.specs import DistillationConfig


class TokenObjective(nn.Module):
    """Called with the student's final hidden states `[tokens, hidden]` and LM head, the labels `[tokens]` and
    the teacher on the same tokens; returns the loss and its terms: `hard_loss` (the cross-entropy) and,
    with a teacher, `soft_loss` (the divergence * T^2) and, without gradient, `kl_to_teacher` (at T = 1) and
    `top1_agreement`. Without one (None: a step whose `alpha` is 0), the loss is the cross-entropy's
    alone."""

    def __init__(self, distillation: DistillationConfig):
        super().__init__()
        self.alpha, self.beta = distillation.alpha, distillation.beta
        self.divergence = TOKEN_DIVERGENCES[distillation.divergence](distillation.jsd_beta)

    def forward(
        self,
        hidden: Tensor,
        head: LMHead,
        labels: Tensor,
        teacher: TeacherTokens | None,
        temperature: float,
        *,
        cross_entropy: bool = True,
    ) -> dict[str, Tensor]:
        """`cross_entropy`: whether the loss has the cross-entropy term (`hard_loss` is reported anyway)."""
        losses = token_level_losses(
            hidden=hidden,
            head=head,
            labels=labels,
            teacher=teacher,
            divergence=self.divergence,
            temperature=temperature,
        )
        loss = self.beta * losses.cross_entropy if cross_entropy else 0.0
        if teacher is None:
            return {"loss": loss, "hard_loss": losses.cross_entropy}
        return {
            "loss": loss + self.alpha * losses.divergence,
            "soft_loss": losses.divergence,
            "hard_loss": losses.cross_entropy,
            "kl_to_teacher": losses.kl_to_teacher,
            "top1_agreement": losses.top1_agreement,
        }
