"""TinyBERT's intermediate-layer losses (Jiao et al. 2020), between two `transformer` models or two
`transformers` text encoders (`hf`).

Student layer m (1-based) learns from teacher layer g(m): its output hidden states through a
learned projection W_h, its attention probabilities directly; the embedding outputs through W_e.
The projections are parameters of `TinyBertLoss`: they train with the student and are never exported.

Captures are the forward-hook outputs at each model's capture points (`Encoder.points`): module paths in a
`transformer` (`transformer.capture_points`), numbered outputs in a transformers model
(`hidden_states.N`, `attentions.N`, read with eager attention). Padded positions, where the student's input
ids are its padding id, are left out of every mean. A job asks for TinyBERT with `distillation.transformer`,
between its students of the first teacher's kind and that teacher (`transformer_term`).
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from engine.models.hf.build import hf_config
from engine.models.hooks import LayerTaps
from engine.models.transformer import PADDING_ID, capture_points
from engine.plan.hf_layers import tinybert_outputs
from engine.plan.layer_map import check_layer_map, uniform_layer_map
from engine.plan.rules import tinybert_kind
from engine.plan.specs import ArchitectureSpec, EngineJob, HFSpec, TransformerSpec


@dataclass(frozen=True)
class Encoder:
    """What TinyBERT reads of a model: its layers, their width, where it captures them (`embeddings`,
    `hidden` and `attention`: the names its taps record them by) and the token id of its padding."""

    layers: int
    width: int
    points: dict
    padding_id: int


def encoder(spec: TransformerSpec | HFSpec) -> Encoder:
    """A `transformer`'s, or a transformers text encoder's as transformers builds it from the spec."""
    if isinstance(spec, HFSpec):
        config = hf_config(spec)  # transformers' names for the sizes (DistilBERT's `n_layers` too)
        layers = config.num_hidden_layers
        return Encoder(layers, config.hidden_size, tinybert_outputs(layers), config.pad_token_id)
    return Encoder(spec.num_layers, spec.hidden_size, capture_points(spec), PADDING_ID)


def projection(student_width: int, teacher_width: int) -> nn.Module:
    if student_width == teacher_width:
        return nn.Identity()
    return nn.Linear(student_width, teacher_width)


def masked_mse(student: Tensor, teacher: Tensor, keep: Tensor) -> Tensor:
    """Mean squared error over the entries where `keep` (broadcast to the inputs' shape) is True."""
    keep = keep.expand_as(student)
    squared = torch.where(keep, (student - teacher) ** 2, 0.0)
    return squared.sum() / keep.sum().clamp(min=1)


class CapturePairs:
    """Looks up a student capture and its teacher counterpart; the teacher side carries no gradient."""

    def __init__(self, student: dict[str, Tensor], teacher: dict[str, Tensor]):
        self.student, self.teacher = student, teacher

    def get(self, student_path: str, teacher_path: str) -> tuple[Tensor, Tensor]:
        student = self._find(self.student, student_path, "student")
        teacher = self._find(self.teacher, teacher_path, "teacher").detach().to(student.dtype)
        return student, teacher

    @staticmethod
    def _find(captures: dict[str, Tensor], path: str, side: str) -> Tensor:
        try:
            return captures[path]
        except KeyError:
            raise KeyError(f"no {side} capture at {path!r}; captured: {sorted(captures)}") from None


class TinyBertLoss(nn.Module):
    """Embedding, hidden-state and attention losses, and their weighted sum `tinybert_loss`.

    Attention: with equal head counts, student head i is compared with teacher head i; otherwise
    both sides are first averaged over their heads, so only the mean attention pattern is matched.
    A term whose weight is 0 is not computed (its captures need not be present) and reads 0.
    """

    def __init__(
        self,
        student_spec: TransformerSpec | HFSpec,
        teacher_spec: TransformerSpec | HFSpec,
        layer_map: list[int] | None = None,
        embedding_weight: float = 1.0,
        hidden_weight: float = 1.0,
        attention_weight: float = 1.0,
    ):
        super().__init__()
        self.weights = {"embedding": embedding_weight, "hidden": hidden_weight, "attention": attention_weight}
        if any(weight < 0 for weight in self.weights.values()):
            raise ValueError(f"TinyBERT loss weights must be >= 0; got {self.weights}")
        student, teacher = encoder(student_spec), encoder(teacher_spec)
        if layer_map is None:
            self.layer_map = uniform_layer_map(student.layers, teacher.layers)
        else:
            self.layer_map = check_layer_map(layer_map, student.layers, teacher.layers)
        self.student_points, self.teacher_points = student.points, teacher.points
        self.embedding_projection = projection(student.width, teacher.width)
        # One W_h shared by all layers, as in the paper.
        self.hidden_projection = projection(student.width, teacher.width)

    def forward(
        self, student_captures: dict[str, Tensor], teacher_captures: dict[str, Tensor], padding_mask: Tensor
    ) -> dict[str, Tensor]:
        """`padding_mask` [B, L] is True at padding. Returns `embedding_loss`,
        `hidden_loss`, `attention_loss` (each a mean over mapped layers) and `tinybert_loss`."""
        keep = ~padding_mask.bool()
        pairs = CapturePairs(student_captures, teacher_captures)
        terms = {
            "embedding": self._embedding_loss,
            "hidden": self._hidden_loss,
            "attention": self._attention_loss,
        }
        losses = {}
        for name, compute in terms.items():
            skipped = self.weights[name] == 0
            losses[f"{name}_loss"] = torch.zeros((), device=keep.device) if skipped else compute(pairs, keep)
        losses["tinybert_loss"] = sum(self.weights[name] * losses[f"{name}_loss"] for name in terms)
        return losses

    def _embedding_loss(self, pairs: CapturePairs, keep: Tensor) -> Tensor:
        student, teacher = pairs.get(self.student_points["embeddings"], self.teacher_points["embeddings"])
        return masked_mse(self.embedding_projection(student), teacher, keep[..., None])

    def _hidden_loss(self, pairs: CapturePairs, keep: Tensor) -> Tensor:
        losses = []
        for student_path, teacher_index in zip(self.student_points["hidden"], self.layer_map, strict=True):
            student, teacher = pairs.get(student_path, self.teacher_points["hidden"][teacher_index])
            losses.append(masked_mse(self.hidden_projection(student), teacher, keep[..., None]))
        return torch.stack(losses).mean()

    def _attention_loss(self, pairs: CapturePairs, keep: Tensor) -> Tensor:
        # Only (query, key) pairs of two real tokens: [B, 1, L, L].
        keep_pairs = (keep[:, :, None] & keep[:, None, :])[:, None]
        losses = []
        for student_path, teacher_index in zip(self.student_points["attention"], self.layer_map, strict=True):
            student, teacher = pairs.get(student_path, self.teacher_points["attention"][teacher_index])
            if student.shape[1] != teacher.shape[1]:
                student, teacher = student.mean(dim=1, keepdim=True), teacher.mean(dim=1, keepdim=True)
            losses.append(masked_mse(student, teacher, keep_pairs))
        return torch.stack(losses).mean()


class TransformerTerm(nn.Module):
    """TinyBERT between a student and teacher 0, from their captured layers.

    Padding is where the student's input ids (recorded by its taps) are `padding_id`; returns
    `embedding_loss`, `hidden_loss`, `attention_loss` and their weighted sum `tinybert_loss`.
    """

    def __init__(self, loss: TinyBertLoss, student_taps: LayerTaps, padding_id: int):
        super().__init__()
        self.loss = loss
        self.student_taps = student_taps
        self.padding_id = padding_id

    def forward(
        self, student_layers: dict[str, Tensor], teacher_layers: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        return self.loss(student_layers, teacher_layers, self.student_taps.input == self.padding_id)


def uses_tinybert(job: EngineJob, spec: ArchitectureSpec) -> bool:
    """Whether a student of `spec` learns the first teacher's layers (a peer of another kind does not)."""
    kind = tinybert_kind(spec)
    return (
        job.distillation.transformer is not None
        and kind is not None
        and kind == tinybert_kind(job.teachers[0].architecture)
    )


def capture_paths(spec: TransformerSpec | HFSpec) -> list[str]:
    """What TinyBERT reads of a model: the embeddings, and each layer's output and attention."""
    points = encoder(spec).points
    return [points["embeddings"], *points["hidden"], *points["attention"]]


def transformer_term(job: EngineJob, spec: ArchitectureSpec, taps: LayerTaps) -> TransformerTerm | None:
    """TinyBERT between a student of `spec` and the first teacher, or None where it takes no part.

    `taps` must record the student's input (see `LayerTaps`). A `mutual` peer of other depth than the
    student, which `layer_map` does not fit, gets the uniform map.
    """
    if not uses_tinybert(job, spec):
        return None
    config, student = job.distillation.transformer, encoder(spec)
    layer_map = config.layer_map
    if layer_map is not None and len(layer_map) != student.layers:
        layer_map = None
    loss = TinyBertLoss(
        spec,
        job.teachers[0].architecture,
        layer_map,
        embedding_weight=config.embedding_weight,
        hidden_weight=config.hidden_weight,
        attention_weight=config.attention_weight,
    )
    return TransformerTerm(loss, taps, student.padding_id)
