"""Exported students: the program runs at any batch size, the weights and spec rebuild the model."""

import json

import pytest
import torch
from pydantic import TypeAdapter
from safetensors.torch import load_file

from engine.export.pt2 import export_student
from engine.models.registry import build_model
from engine.plan.specs import ArchitectureSpec, CNNSpec, MLPSpec

SPECS = [
    MLPSpec(input_shape=[2, 4], num_classes=3, hidden_sizes=[6], dropout=0.2, activation="gelu"),
    CNNSpec(input_shape=[1, 8, 8], num_classes=4, widths=[4, 8], blocks_per_stage=2, dropout=0.1),
]


@pytest.fixture(scope="module", params=SPECS, ids=["mlp", "cnn"])
def exported(request, tmp_path_factory):
    spec, out_dir = request.param, tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = build_model(spec)
    model(torch.randn(16, *spec.input_shape))  # a train-mode pass so BatchNorm statistics are not trivial
    paths = export_student(model, spec, torch.randn(5, *spec.input_shape), out_dir)
    return spec, model, paths


def test_files_are_written(exported):
    _, _, paths = exported
    assert set(paths) == {"student.safetensors", "student.json", "student.pt2"}
    assert all(path.name == name and path.stat().st_size > 0 for name, path in paths.items())


def test_caller_model_is_left_in_training_mode(exported):
    _, model, _ = exported
    assert model.training


@pytest.mark.parametrize("batch", [1, 7])
def test_program_matches_the_model_at_any_batch_size(exported, batch):
    spec, model, paths = exported
    program = torch.export.load(paths["student.pt2"]).module()
    x = torch.randn(batch, *spec.input_shape)
    with torch.no_grad():
        expected = build_model(spec).eval()
        expected.load_state_dict(model.state_dict())
        torch.testing.assert_close(program(x), expected(x))


def test_spec_and_weights_rebuild_an_identical_model(exported):
    spec, model, paths = exported
    rebuilt_spec = TypeAdapter(ArchitectureSpec).validate_python(
        json.loads(paths["student.json"].read_text())
    )
    assert rebuilt_spec == spec
    rebuilt = build_model(rebuilt_spec)
    rebuilt.load_state_dict(load_file(paths["student.safetensors"]), strict=True)
    x = torch.randn(3, *spec.input_shape)
    expected = build_model(spec).eval()
    expected.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.eval()(x), expected(x))
