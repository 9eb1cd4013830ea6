"""A causal language model student's loss: the token-level divergence to the teacher at T, times T^2, weighted
by `alpha`, plus the next-token cross-entropy weighted by `beta` (Hinton's recipe, token by token), computed a
chunk of tokens at a time (`token_level`), plus the weighted feature losses of the hidden states paired."""

from torch import Tensor, nn

from engine.losses.features import FeatureDistiller
from engine.losses.token_divergences import TOKEN_DIVERGENCES
from engine.losses.token_level import LMHead, TeacherTokens, token_level_losses
from engine.plan.specs import DistillationConfig


class TokenObjective(nn.Module):
    """Called with the student's final hidden states `[tokens, hidden]` and LM head, the labels `[tokens]` and
    the teacher on the same tokens; returns the loss and its terms: `hard_loss` (the cross-entropy) and,
    with a teacher, `soft_loss` (the divergence * T^2) and, without gradient, `kl_to_teacher` (at T = 1) and
    `top1_agreement`. Without one (None: a step whose `alpha` is 0), the loss is the cross-entropy's
    alone. With `features`, also `feature_loss`, from the paired layers' outputs at the tokens (`[tokens, D]`
    each, padding left out: `token_layers`); its projections train with the student."""

    def __init__(self, distillation: DistillationConfig, features: FeatureDistiller | None = None):
        super().__init__()
        self.alpha, self.beta = distillation.alpha, distillation.beta
        self.divergence = TOKEN_DIVERGENCES[distillation.divergence](distillation.jsd_beta)
        self.features = features

    def forward(
        self,
        hidden: Tensor,
        head: LMHead,
        labels: Tensor,
        teacher: TeacherTokens | None,
        temperature: float,
        *,
        cross_entropy: bool = True,
        layers: tuple[dict[str, Tensor], dict[str, Tensor]] | None = None,
    ) -> dict[str, Tensor]:
        """`cross_entropy`: whether the loss has the cross-entropy term (`hard_loss` is reported anyway);
        `layers`: the student's and the teacher's paired layers, with `features`."""
        losses = token_level_losses(
            hidden=hidden,
            head=head,
            labels=labels,
            teacher=teacher,
            divergence=self.divergence,
            temperature=temperature,
        )
        loss = self.beta * losses.cross_entropy if cross_entropy else 0.0
        terms = {"hard_loss": losses.cross_entropy}
        if teacher is not None:
            loss = loss + self.alpha * losses.divergence
            terms |= {
                "soft_loss": losses.divergence,
                "kl_to_teacher": losses.kl_to_teacher,
                "top1_agreement": losses.top1_agreement,
            }
        if self.features is not None:
            student_layers, teacher_layers = layers
            terms["feature_loss"] = self.features(student_layers, [teacher_layers])
            loss = loss + terms["feature_loss"]
        return {"loss": loss} | terms


def token_layers(outputs: dict[str, Tensor], attention_mask: Tensor) -> dict[str, Tensor]:
    """Layer outputs `[N, L, D]` as `[tokens, D]`, at the positions where a token is (padding left out)."""
    return {path: output[attention_mask.bool()] for path, output in outputs.items()}
