"""One or several frozen teachers, run together on each batch (multi-teacher distillation)."""

import torch
from torch import Tensor, nn

from engine.hooks import LayerTaps
from engine.losses import TeacherOutputs
from engine.models import count_parameters


class TeacherEnsemble:
    """`mean`: every teacher on every batch, their softened distributions averaged by weight.
    `random`: one teacher per batch, drawn by weight (plus any teacher a feature pair reads)."""

    def __init__(
        self, teachers: list[nn.Module], weights: list[float], mode: str, layer_paths: list[list[str]]
    ):
        self.teachers = teachers
        self.weights = torch.tensor(weights, dtype=torch.float32) / sum(weights)
        self.mode = mode
        self.taps = [
            LayerTaps(t, paths, f"teacher {i}")
            for i, (t, paths) in enumerate(zip(teachers, layer_paths, strict=True))
        ]
        self._tapped = [i for i, paths in enumerate(layer_paths) if paths]

    def __len__(self) -> int:
        return len(self.teachers)

    @torch.no_grad()
    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> TeacherOutputs:
        if self.mode == "random" and len(self.teachers) > 1:
            drawn = int(torch.multinomial(self.weights, 1, generator=generator))
            logits = self.teachers[drawn](x).float()
            for index in set(self._tapped) - {drawn}:
                self.teachers[index](x)  # only for the layers its feature pairs read
            return TeacherOutputs.single(logits)
        logits = torch.stack([teacher(x).float() for teacher in self.teachers])
        return TeacherOutputs(logits, self.weights.to(logits.device))

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int, device: torch.device) -> Tensor:
        """Log-probabilities of the weighted ensemble (all teachers, at T = 1), batch by batch, on the CPU:
        for one teacher, its log-softmax, which ranks classes as its logits do."""
        outputs = []
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device)
            logits = torch.stack([teacher(batch).float() for teacher in self.teachers])
            outputs.append(TeacherOutputs(logits, self.weights.to(device)).log_probabilities(1.0).cpu())
        return torch.cat(outputs)

    def parameter_count(self) -> int:
        return sum(count_parameters(teacher) for teacher in self.teachers)

    def layer_outputs(self) -> list[dict[str, Tensor]]:
        return [taps.outputs for taps in self.taps]
