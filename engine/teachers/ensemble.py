"""One or several frozen teachers, run together on each batch (multi-teacher distillation)."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from engine.losses.functions import TeacherOutputs
from engine.models.hooks import LayerTaps
from engine.models.registry import count_parameters


@dataclass(frozen=True)
class TeacherBatch:
    """What the teachers give for one batch: their logits, and each teacher's outputs of the layers the
    job reads from it (feature pairs, TinyBERT)."""

    outputs: TeacherOutputs
    layers: list[dict[str, Tensor]]


class TeacherEnsemble:
    """`mean`: every teacher on every batch, their softened distributions averaged by weight.
    `random`: one teacher per batch, drawn by weight (plus any teacher a feature pair reads)."""

    def __init__(
        self, teachers: list[nn.Module], weights: list[float], mode: str, layer_paths: list[list[str]]
    ):
        self.teachers = teachers
        self.weights = torch.tensor(weights, dtype=torch.float32) / sum(weights)
        self.mode = mode
        self.layer_paths = layer_paths
        self.taps = [
            LayerTaps(t, paths, f"teacher {i}")
            for i, (t, paths) in enumerate(zip(teachers, layer_paths, strict=True))
        ]
        self._tapped = [i for i, paths in enumerate(layer_paths) if paths]

    def __len__(self) -> int:
        return len(self.teachers)

    @torch.no_grad()
    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> TeacherBatch:
        drawn = self.draw(generator)
        needed = range(len(self)) if drawn is None else sorted({drawn, *self._tapped})
        outputs = {index: self.run_one(index, x) for index in needed}
        logits = {index: values for index, (values, _layers) in outputs.items()}
        layers = [outputs[index][1] if index in outputs else {} for index in range(len(self))]
        return TeacherBatch(self.combine(logits, drawn), layers)

    def draw(self, generator: torch.Generator | None) -> int | None:
        """`random`: the teacher this batch learns from, drawn by weight; None: all of them."""
        if self.mode == "random" and len(self.teachers) > 1:
            return int(torch.multinomial(self.weights, 1, generator=generator))
        return None

    def combine(self, logits: Mapping[int, Tensor], drawn: int | None) -> TeacherOutputs:
        """The soft targets of a batch from each teacher's logits on it (by teacher index)."""
        if drawn is not None:
            return TeacherOutputs.single(logits[drawn])
        stacked = torch.stack([logits[index] for index in range(len(self))])
        return TeacherOutputs(stacked, self.weights.to(stacked.device))

    @torch.no_grad()
    def run_one(self, index: int, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """One teacher's float logits on `x` and its outputs of the layers the job reads."""
        logits = self.teachers[index](x).float()
        return logits, dict(self.taps[index].outputs)

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int, device: torch.device) -> Tensor:
        """Log-probabilities of the weighted ensemble (all teachers, at T = 1), batch by batch, on the CPU:
        for one teacher, its log-softmax, which ranks classes as its logits do."""

        def logits(start: int, end: int) -> list[Tensor]:
            batch = x[start:end].to(device)
            return [teacher(batch).float() for teacher in self.teachers]

        return self.log_probabilities(logits, len(x), batch_size)

    def log_probabilities(
        self, logits: Callable[[int, int], list[Tensor]], num_samples: int, batch_size: int
    ) -> Tensor:
        """The ensemble's log-probabilities at T = 1 over `num_samples`, on the CPU, from each teacher's
        logits on samples [start, end), taken `batch_size` at a time."""
        outputs = []
        for start in range(0, num_samples, batch_size):
            stacked = torch.stack(logits(start, start + batch_size))
            outputs.append(
                TeacherOutputs(stacked, self.weights.to(stacked.device)).log_probabilities(1.0).cpu()
            )
        return torch.cat(outputs)

    def parameter_count(self) -> int:
        return sum(count_parameters(teacher) for teacher in self.teachers)
