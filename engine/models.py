"""Model families, looked up by `spec.family` in a registry.

Submodules have stable, readable names (`hidden.0.linear`, `stages.1.0.conv2`, `head`) because
checkpoints are keyed by them and feature distillation reaches layers by name with forward hooks.
Forward passes have no data-dependent control flow, so every model exports with torch.export.
"""

import math
from collections.abc import Callable
from itertools import pairwise

from torch import Tensor, nn

from engine.specs import CNNSpec, MLPSpec

ModelBuilder = Callable[..., nn.Module]

_BUILDERS: dict[str, ModelBuilder] = {}


def register(family: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Class or function decorator: `@register("mlp")` makes `build_model` use it for that family."""

    def add(builder: ModelBuilder) -> ModelBuilder:
        if family in _BUILDERS:
            raise ValueError(f"model family {family!r} is already registered")
        _BUILDERS[family] = builder
        return builder

    return add


def build_model(spec: MLPSpec | CNNSpec) -> nn.Module:
    try:
        builder = _BUILDERS[spec.family]
    except KeyError:
        raise ValueError(f"unknown model family {spec.family!r}; known: {sorted(_BUILDERS)}") from None
    return builder(spec)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MLPBlock(nn.Module):
    def __init__(self, in_features: int, out_features: int, activation: str, dropout: float):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.activation(self.linear(x)))


@register("mlp")
class MLP(nn.Module):
    def __init__(self, spec: MLPSpec):
        super().__init__()
        widths = [math.prod(spec.input_shape), *spec.hidden_sizes]
        self.flatten = nn.Flatten()
        self.hidden = nn.Sequential(
            *(
                MLPBlock(in_features, out_features, spec.activation, spec.dropout)
                for in_features, out_features in pairwise(widths)
            )
        )
        self.head = nn.Linear(widths[-1], spec.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.hidden(self.flatten(x)))


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    # No bias: the BatchNorm that follows has its own.
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """He et al. (2016): two 3x3 convolutions and a residual connection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


@register("cnn")
class ResNet(nn.Module):
    def __init__(self, spec: CNNSpec):
        super().__init__()
        channels = spec.input_shape[0]
        self.stem = nn.Sequential(
            conv3x3(channels, spec.widths[0]), nn.BatchNorm2d(spec.widths[0]), nn.ReLU()
        )
        stages = []
        in_channels = spec.widths[0]
        for index, width in enumerate(spec.widths):
            stride = 1 if index == 0 else 2
            blocks = [BasicBlock(in_channels, width, stride)]
            blocks += [BasicBlock(width, width, 1) for _ in range(spec.blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(spec.dropout)
        self.head = nn.Linear(in_channels, spec.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        features = self.pool(self.stages(self.stem(x)))
        return self.head(self.dropout(self.flatten(features)))


def cnn_output_size(spec: CNNSpec) -> tuple[int, int]:
    """Height and width after the last stage: each stride-2 3x3 conv (padding 1) rounds up."""
    height, width = spec.input_shape[1:]
    for _ in spec.widths[1:]:
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    return height, width


# Families defined in their own modules register themselves when imported; importing them here
# (after `register` exists) means `build_model` knows every family once this module is loaded.
from engine import transformer  # noqa: E402, F401
