"""Loading teachers: safetensors with an architecture, or torch.export programs."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from torch.export import Dim

from engine.models.registry import build_model
from engine.plan.errors import JobFailed
from engine.plan.specs import CNNSpec, MLPSpec
from engine.teachers.loading import load_teacher

SPEC = MLPSpec(input_shape=[6], num_classes=3, hidden_sizes=[5])


def saved_weights(tmp_path, spec=SPEC, name="teacher.safetensors"):
    torch.manual_seed(0)
    model = build_model(spec)
    path = tmp_path / name
    save_file(model.state_dict(), path)
    return model.eval(), path


def load_failure(path, format="safetensors", architecture=SPEC) -> JobFailed:
    with pytest.raises(JobFailed) as caught:
        load_teacher(path, format, architecture)
    return caught.value


def test_safetensors_teacher_is_frozen_and_matches_its_source(tmp_path):
    source, path = saved_weights(tmp_path)
    teacher = load_teacher(path, "safetensors", SPEC)
    assert not teacher.training
    assert not any(parameter.requires_grad for parameter in teacher.parameters())
    x = torch.randn(4, 6)
    assert torch.equal(teacher(x), source(x))


def test_cnn_teacher_loads_with_its_batchnorm_buffers(tmp_path):
    spec = CNNSpec(input_shape=[1, 8, 8], num_classes=3, widths=[4, 8])
    torch.manual_seed(0)
    source = build_model(spec)
    source(torch.randn(8, 1, 8, 8) + 3)  # moves the running statistics away from their defaults
    path = tmp_path / "teacher.safetensors"
    save_file(source.eval().state_dict(), path)
    teacher = load_teacher(path, "safetensors", spec)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(teacher(x), source(x))


def test_safetensors_needs_an_architecture(tmp_path):
    _, path = saved_weights(tmp_path)
    error = load_failure(path, architecture=None)
    assert error.code == "architecture_required"


def test_garbage_bytes(tmp_path):
    path = tmp_path / "teacher.safetensors"
    path.write_bytes(b"\x00\x01garbage" * 10)
    error = load_failure(path)
    assert error.code == "teacher_load_failed"
    assert "teacher.safetensors is not a valid safetensors file" in error.message


def test_truncated_file(tmp_path):
    _, path = saved_weights(tmp_path)
    path.write_bytes(path.read_bytes()[:-40])
    error = load_failure(path)
    assert error.code == "teacher_load_failed" and "not a valid safetensors file" in error.message


def test_wrong_keys_are_all_listed(tmp_path):
    state = build_model(SPEC).state_dict()
    state["extra.weight"] = torch.zeros(2)
    del state["head.bias"]
    del state["hidden.0.linear.weight"]
    path = tmp_path / "teacher.safetensors"
    save_file(state, path)
    error = load_failure(path)
    assert error.code == "teacher_load_failed"
    for problem in (
        "missing key hidden.0.linear.weight",
        "missing key head.bias",
        "unexpected key extra.weight",
    ):
        assert problem in error.message


def test_wrong_shapes_are_listed_with_both_shapes(tmp_path):
    _, path = saved_weights(tmp_path, MLPSpec(input_shape=[6], num_classes=3, hidden_sizes=[7]))
    error = load_failure(path)
    assert error.code == "teacher_load_failed"
    assert "hidden.0.linear.weight: checkpoint [7, 6] vs architecture [5, 6]" in error.message
    assert "hidden.0.linear.bias: checkpoint [7] vs architecture [5]" in error.message
    assert "head.weight: checkpoint [3, 7] vs architecture [3, 5]" in error.message


def test_long_lists_of_problems_are_capped(tmp_path):
    path = tmp_path / "teacher.safetensors"
    save_file({f"layer{index}.weight": torch.zeros(1) for index in range(30)}, path)
    error = load_failure(path)
    assert "and 14 more" in error.message  # 4 missing + 30 unexpected, 20 listed
    assert error.message.count("unexpected key") == 16


def export_to(tmp_path, model, example):
    path = tmp_path / "teacher.pt2"
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: Dim("batch", min=1)},))
    torch.export.save(program, path)
    return path


def test_pt2_teacher_matches_the_module_it_came_from(tmp_path):
    torch.manual_seed(0)
    source = build_model(CNNSpec(input_shape=[1, 8, 8], num_classes=3, widths=[4, 8])).eval()
    path = export_to(tmp_path, source, torch.randn(2, 1, 8, 8))
    teacher = load_teacher(path, "pt2", None)
    assert not any(parameter.requires_grad for parameter in teacher.parameters())
    assert sum(p.numel() for p in teacher.parameters()) == sum(p.numel() for p in source.parameters())
    for batch in (1, 5):
        x = torch.randn(batch, 1, 8, 8)
        torch.testing.assert_close(teacher(x), source(x))


def test_pt2_garbage(tmp_path):
    path = tmp_path / "teacher.pt2"
    path.write_bytes(b"not a program")
    error = load_failure(path, format="pt2", architecture=None)
    assert error.code == "teacher_load_failed" and "not a valid torch.export (.pt2) program" in error.message


def test_safetensors_file_given_as_pt2(tmp_path):
    _, path = saved_weights(tmp_path)
    assert load_failure(path, format="pt2", architecture=None).code == "teacher_load_failed"


def test_a_declared_architecture_is_compared_with_the_file_before_anything_is_allocated(tmp_path):
    """A small file declaring a model of 4.3e9 parameters (17 GB) fails with the mismatch, in a process
    that may not allocate 3 GB: the declared model is never built for real."""
    _, path = saved_weights(tmp_path)
    huge = MLPSpec(input_shape=[4], num_classes=3, hidden_sizes=[65_536, 65_536])
    code = f"""
import resource
from pathlib import Path
from engine.plan.errors import JobFailed
from engine.plan.specs import MLPSpec
from engine.teachers.loading import load_teacher
import torch  # its libraries are mapped before the limit
resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, resource.RLIM_INFINITY))
try:
    load_teacher(Path({str(path)!r}), "safetensors", MLPSpec.model_validate_json({huge.model_dump_json()!r}))
except JobFailed as error:
    print(error.code, error.message)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("teacher_load_failed") and "hidden.1.linear.weight" in result.stdout
