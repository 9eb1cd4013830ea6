"""The `mlp` family: a multilayer perceptron over flattened inputs."""

import math
from itertools import pairwise

from torch import Tensor, nn

from engine.plan.specs import MLPSpec

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MLPBlock(nn.Module):
    def __init__(self, in_features: int, out_features: int, activation: str, dropout: float):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.activation(self.linear(x)))


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
