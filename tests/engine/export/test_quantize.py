"""The int8 student: close to the float model, a quarter of the weight bytes, a plain torch.export program."""

import numpy as np
import pytest
import torch
from torch import nn

from engine.evaluate import predict
from engine.export.pt2 import export_program
from engine.export.quantize import (
    INT8_PROGRAM,
    Int8Conv2d,
    Int8Embedding,
    Int8Linear,
    export_int8,
    quantize_int8,
    quantize_weight,
)
from engine.models.registry import build_model
from engine.plan.specs import CNNSpec, MLPSpec, TransformerSpec
from tests.engine.factories import FEATURES, NUM_CLASSES, gaussian_blobs, train_classifier

# A few hundred thousand parameters, so the weights outweigh the program's fixed overhead.
MLP = MLPSpec(input_shape=[FEATURES], num_classes=NUM_CLASSES, hidden_sizes=[512, 512])
CNN = CNNSpec(input_shape=[1, 4, 4], num_classes=NUM_CLASSES, widths=[16, 32])
TRANSFORMER = TransformerSpec(
    vocab_size=64,
    max_length=8,
    num_classes=NUM_CLASSES,
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    pooling="mean",
)


def blob_images(num_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The blobs drawn as 1x4x4 images: 8 features plus their negatives."""
    x, y = gaussian_blobs(num_samples, seed)
    return np.concatenate([x, -x], axis=1).reshape(-1, 1, 4, 4), y


def token_sequences(num_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class c draws its tokens from ids [1 + 15c, 16 + 15c), after a random amount of padding at the end."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, size=num_samples)
    ids = 1 + 15 * y[:, None] + rng.integers(0, 15, size=(num_samples, 8))
    lengths = rng.integers(2, 9, size=num_samples)
    ids[np.arange(8) >= lengths[:, None]] = 0
    return ids, y


TASKS = {
    "mlp": (MLP, gaussian_blobs),
    "cnn": (CNN, blob_images),
    "transformer": (TRANSFORMER, token_sequences),
}


@pytest.fixture(scope="module", params=list(TASKS))
def trained(request, tmp_path_factory):
    """A trained float model, held-out data, the int8 program's path and the program loaded from it."""
    spec, make_data = TASKS[request.param]
    torch.manual_seed(0)
    model = train_classifier(build_model(spec), *make_data(256), steps=40)
    x, _ = make_data(200, seed=1)
    x = torch.from_numpy(x)
    path = export_int8(model, x, tmp_path_factory.mktemp("int8"))
    return model, x, path, torch.export.load(path).module()


def test_weight_round_trips_within_half_a_step_per_channel():
    weight = torch.randn(6, 3, 2, 2) * torch.arange(1, 7).reshape(6, 1, 1, 1)
    weight[2] = 0
    values, scale = quantize_weight(weight)
    assert values.dtype == torch.int8 and values.abs().max() <= 127
    assert scale.shape == (6,) and torch.all(values[2] == 0)
    error = (values.float() * scale.reshape(6, 1, 1, 1) - weight).abs()
    assert torch.all(error <= scale.reshape(6, 1, 1, 1) / 2 + 1e-7)


def test_layers_with_weights_are_replaced_in_a_copy():
    model = build_model(TRANSFORMER).train()
    quantized = quantize_int8(model)
    replaced = {type(module) for module in quantized.modules()}
    assert {Int8Linear, Int8Embedding} <= replaced and not replaced & {nn.Linear, nn.Embedding}
    assert Int8Conv2d in {type(module) for module in quantize_int8(build_model(CNN)).modules()}
    assert isinstance(model.head, nn.Linear) and model.training and not quantized.training


def test_weights_take_about_a_quarter_of_the_bytes(trained):
    model = trained[0]

    def weight_bytes(module):
        return sum(tensor.nbytes for tensor in module.state_dict().values())

    # Not quite a quarter: biases, scales and normalisation stay float.
    assert weight_bytes(quantize_int8(model)) < 0.35 * weight_bytes(model)


@pytest.mark.parametrize("batch", [1, 7])
def test_program_loads_with_plain_torch_at_any_batch_size(trained, batch):
    model, x, path, program = trained
    assert path.name == INT8_PROGRAM
    with torch.no_grad():
        torch.testing.assert_close(program(x[:batch]), quantize_int8(model)(x[:batch]))


def test_int8_predictions_match_the_float_model(trained):
    model, x, _, program = trained
    expected = predict(model, x, batch_size=64, device="cpu")
    for int8_model in (quantize_int8(model), program):
        logits = predict(int8_model, x, batch_size=64, device="cpu")
        assert (logits.argmax(dim=1) == expected.argmax(dim=1)).float().mean() >= 0.95
        assert (logits - expected).norm() / expected.norm() < 0.02


def test_int8_program_is_much_smaller_than_the_float_program(tmp_path):
    torch.manual_seed(0)
    model = build_model(MLP).eval()
    x = torch.randn(2, FEATURES)
    float_path = tmp_path / "student.pt2"
    torch.export.save(export_program(model, x), float_path)
    int8_path = export_int8(model, x, tmp_path)
    assert int8_path.stat().st_size < 0.35 * float_path.stat().st_size
