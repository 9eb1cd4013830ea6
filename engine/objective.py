"""What the student minimises on a batch: alpha·soft + beta·hard + the weighted feature losses
+ the weighted TinyBERT layer losses."""

from torch import Tensor, nn

from engine.features import FeatureDistiller
from engine.hooks import LayerTaps
from engine.losses import RESPONSE_LOSSES, TeacherOutputs, hard_loss
from engine.specs import DistillationConfig
from engine.tinybert import TinyBertLoss
from engine.transformer import PADDING_ID


class Objective(nn.Module):
    """Returns every term by name, plus their weighted sum as `loss`. Its parameters (the feature and
    TinyBERT projections) train with the student."""

    def __init__(
        self,
        config: DistillationConfig,
        features: FeatureDistiller | None = None,
        transformer: "TransformerTerm | None" = None,
    ):
        super().__init__()
        self.config = config
        self.features = features
        self.transformer = transformer
        self.response_loss = RESPONSE_LOSSES[config.soft_loss]

    def forward(
        self,
        student_logits: Tensor,
        teachers: TeacherOutputs,
        labels: Tensor | None,
        temperature: float,
        student_layers: dict[str, Tensor],
        teacher_layers: list[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        terms = {"soft_loss": self.response_loss(student_logits, teachers, temperature)}
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


class TransformerTerm(nn.Module):
    """TinyBERT between a transformer student and teacher 0, from their captured layers.

    Padding is where the student's input ids (recorded by its taps) are 0; returns `embedding_loss`,
    `hidden_loss`, `attention_loss` and their weighted sum `tinybert_loss`.
    """

    def __init__(self, loss: TinyBertLoss, student_taps: LayerTaps):
        super().__init__()
        self.loss = loss
        self.student_taps = student_taps

    def forward(
        self, student_layers: dict[str, Tensor], teacher_layers: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        input_ids = self.student_taps.input
        if input_ids is None:
            raise RuntimeError("the student's taps record no input: create them with record_input=True")
        return self.loss(student_layers, teacher_layers, input_ids == PADDING_ID)
