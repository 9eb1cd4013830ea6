"""What the student minimises on a batch: alpha·soft + beta·hard + the weighted feature losses
+ the weighted TinyBERT layer losses. The soft loss is `soft_loss`'s, on standardised logits where
`logit_standardization` asks."""

from torch import Tensor, nn

from engine.losses.features import FeatureDistiller
from engine.losses.functions import RESPONSE_LOSSES, ResponseBatch, TeacherOutputs, hard_loss
from engine.plan.specs import DistillationConfig


class Objective(nn.Module):
    """Returns every term by name, plus their weighted sum as `loss`. Its parameters (the feature and
    TinyBERT projections) train with the student.

    `transformer`: TinyBERT's term (`tinybert.TransformerTerm`): the student's and the first teacher's
    layers -> named losses, among them `tinybert_loss`, the one added to `loss`.
    """

    def __init__(
        self,
        config: DistillationConfig,
        features: FeatureDistiller | None = None,
        transformer: nn.Module | None = None,
    ):
        super().__init__()
        self.config = config
        self.features = features
        self.transformer = transformer
        self.response_loss = RESPONSE_LOSSES[config.soft_loss](config)

    def forward(
        self,
        student_logits: Tensor,
        teachers: TeacherOutputs,
        labels: Tensor | None,
        temperature: float,
        student_layers: dict[str, Tensor],
        teacher_layers: list[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        batch = ResponseBatch(student_logits, teachers, temperature, labels)
        if self.config.logit_standardization:
            batch = batch.standardized()
        terms = {"soft_loss": self.response_loss(batch)}
        loss = self.config.alpha * terms["soft_loss"]
        if labels is not None:  # unlabeled data: the hard term is skipped whatever beta is
            terms["hard_loss"] = hard_loss(student_logits, labels)
            loss = loss + self.config.beta * terms["hard_loss"]
        if self.features is not None:
            terms["feature_loss"] = self.features(student_layers, teacher_layers)
            loss = loss + terms["feature_loss"]
        if self.transformer is not None:
            terms |= self.transformer(student_layers, teacher_layers[0])
            loss = loss + terms["tinybert_loss"]
        return {"loss": loss} | terms
