"""Feature (hint) distillation: each pair's student layer, projected to the teacher layer's shape,
imitates it (FitNets, Romero et al. 2015). The projections train with the student; they are not
part of the exported student."""

from torch import Tensor, nn
from torch.nn import functional as F

from engine.losses.functions import FEATURE_LOSSES
from engine.plan.errors import JobFailed
from engine.plan.specs import FeaturePair


class MapProjection(nn.Module):
    """A 1x1 convolution to the teacher's channels, then pooling to the teacher's spatial size."""

    def __init__(self, student_channels: int, teacher_channels: int, teacher_size: tuple[int, int]):
        super().__init__()
        self.conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
        self.teacher_size = teacher_size

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return x if tuple(x.shape[-2:]) == self.teacher_size else F.adaptive_avg_pool2d(x, self.teacher_size)


def projection(
    pair: FeaturePair, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]
) -> nn.Module:
    """The map from one sample's student feature shape to the teacher's (shapes without the batch)."""
    if student_shape == teacher_shape:
        return nn.Identity()
    if len(student_shape) == len(teacher_shape) == 3:
        return MapProjection(student_shape[0], teacher_shape[0], tuple(teacher_shape[1:]))
    if len(student_shape) == len(teacher_shape) and student_shape[:-1] == teacher_shape[:-1]:
        return nn.Linear(student_shape[-1], teacher_shape[-1], bias=False)  # vectors, or per token
    raise JobFailed(
        "incompatible_features",
        f"feature pair {pair.student!r} -> {pair.teacher!r}: the student layer gives samples of shape "
        f"{list(student_shape)} and the teacher layer {list(teacher_shape)}; a learned projection maps "
        "[D] to [D'], [L, D] to [L, D'] and [C, H, W] to [C', H', W']: pick layers of matching kind",
    )


class FeatureDistiller(nn.Module):
    """The weighted feature losses of the configured pairs, from the layers' captured outputs."""

    def __init__(self, pairs: list[FeaturePair], student_shapes: dict, teacher_shapes: list[dict]):
        super().__init__()
        self.pairs = pairs
        self.projections = nn.ModuleList(
            projection(p, student_shapes[p.student], teacher_shapes[p.teacher_index][p.teacher])
            for p in pairs
        )

    def forward(self, student_outputs: dict[str, Tensor], teacher_outputs: list[dict[str, Tensor]]) -> Tensor:
        total = 0.0
        for pair, project in zip(self.pairs, self.projections, strict=True):
            student = project(student_outputs[pair.student])
            teacher = teacher_outputs[pair.teacher_index][pair.teacher].detach()
            total = total + pair.weight * FEATURE_LOSSES[pair.loss](student, teacher)
        return total


def sample_shapes(outputs: dict[str, object], role: str) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes of captured layer outputs; every layer must have produced one tensor."""
    shapes = {}
    for path, output in outputs.items():
        if not isinstance(output, Tensor):
            raise JobFailed(
                "incompatible_features",
                f"the {role}'s layer {path!r} returns {type(output).__name__}, not one tensor: pick a layer "
                "whose output is a single tensor",
            )
        shapes[path] = tuple(output.shape[1:])
    return shapes
