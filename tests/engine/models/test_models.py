"""Model families: shapes, parameter counts, layer names, and the registry."""

import pytest
import torch
from torch import nn

from engine.models.registry import build_model, count_parameters
from engine.plan.sizes import stage_resolutions
from engine.plan.specs import CNNSpec, MLPSpec


@pytest.mark.parametrize("input_shape", [[8], [1, 4, 4], [2, 3, 4, 5]])
@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
def test_mlp_flattens_any_input_shape(input_shape, activation):
    model = build_model(
        MLPSpec(input_shape=input_shape, num_classes=3, hidden_sizes=[5, 4], activation=activation)
    )
    assert model(torch.randn(2, *input_shape)).shape == (2, 3)


def test_mlp_parameter_count_matches_a_hand_count():
    model = build_model(MLPSpec(input_shape=[3], num_classes=2, hidden_sizes=[4]))
    assert count_parameters(model) == (3 * 4 + 4) + (4 * 2 + 2)
    assert count_parameters(build_model(MLPSpec(input_shape=[3], num_classes=2))) == 3 * 2 + 2


def test_mlp_layers_have_readable_names():
    model = build_model(MLPSpec(input_shape=[6], num_classes=2, hidden_sizes=[5, 4], dropout=0.5))
    names = dict(model.named_modules())
    assert isinstance(names["hidden.0.linear"], nn.Linear)
    assert isinstance(names["hidden.1.dropout"], nn.Dropout) and names["hidden.1.dropout"].p == 0.5
    assert isinstance(names["head"], nn.Linear) and names["head"].in_features == 4


@pytest.mark.parametrize(
    ("input_shape", "widths", "blocks"),
    [
        ([1, 8, 8], [4, 8], 1),
        ([3, 32, 32], [8, 16, 32], 2),
        ([3, 7, 5], [4, 4, 4, 4], 1),
        ([2, 1, 1], [4, 8], 1),
    ],
)
def test_cnn_handles_small_and_odd_inputs(input_shape, widths, blocks):
    spec = CNNSpec(input_shape=input_shape, num_classes=5, widths=widths, blocks_per_stage=blocks)
    model = build_model(spec).eval()
    features = []
    model.stages.register_forward_hook(lambda module, inputs, output: features.append(output))
    assert model(torch.randn(3, *input_shape)).shape == (3, 5)
    assert tuple(features[0].shape[2:]) == stage_resolutions(spec)[-1]


def test_cnn_structure_follows_the_spec():
    model = build_model(CNNSpec(input_shape=[3, 16, 16], num_classes=10, widths=[8, 16], blocks_per_stage=2))
    names = dict(model.named_modules())
    assert len(model.stages) == 2 and all(len(stage) == 2 for stage in model.stages)
    assert isinstance(names["stages.0.0.shortcut"], nn.Identity)  # same width, stride 1
    assert names["stages.1.0.conv1"].stride == (2, 2)
    assert isinstance(names["stages.1.0.shortcut.0"], nn.Conv2d)  # width changes: 1x1 projection
    assert isinstance(names["stages.1.1.shortcut"], nn.Identity)
    assert names["head"].in_features == 16 and names["head"].out_features == 10


def test_cnn_stem_projection_when_first_width_differs_from_channels():
    model = build_model(CNNSpec(input_shape=[3, 8, 8], num_classes=2, widths=[4]))
    assert model.stem[0].in_channels == 3 and model.stem[0].out_channels == 4


def test_unknown_family_is_refused():
    class Fake:
        family = "rnn"

    with pytest.raises(ValueError, match="unknown model family 'rnn'"):
        build_model(Fake())
