"""Loading the teacher: a safetensors state dict plus its architecture, a torch.export program, an ONNX
model, or a `transformers` classifier's `save_pretrained` folder."""

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from engine.models.hf.loading import load_hf_model
from engine.models.hf.outputs import attention_implementation
from engine.models.registry import build_model
from engine.plan.errors import JobFailed, capped_list
from engine.plan.specs import ArchitectureSpec, HFSpec, TeacherFormat
from engine.teachers.onnx_runtime import OnnxTeacher


def load_teacher(
    path: Path,
    format: TeacherFormat,
    architecture: ArchitectureSpec | HFSpec | None = None,
    layers: Sequence[str] = (),
) -> nn.Module:
    """A frozen teacher on the CPU, in eval mode where the format allows it, whose `layers` the job reads.

    `pt2` programs ignore `architecture` and cannot be switched to eval mode afterwards: they
    keep the mode they were exported in, so teachers must be exported from a model in eval mode
    (otherwise dropout stays active and BatchNorm normalizes with batch statistics). A `tapped`
    program (one whose layers the job reads) is unflattened so its layers keep their module paths.
    An `onnx` model's layers are its graph's named values. An `hf` teacher's `path` is the unpacked folder
    and its `architecture` the `HFSpec` read from it; it attends eagerly where its attention probabilities
    are read.
    """
    if format == "safetensors":
        teacher = _load_safetensors(path, architecture)
    elif format == "hf":
        teacher = _load_hf(path, architecture, layers)
    elif format == "onnx":
        teacher = OnnxTeacher(path, layers)
    else:
        teacher = _load_exported_program(path, tapped=bool(layers))
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def _load_safetensors(path: Path, architecture: ArchitectureSpec | None) -> nn.Module:
    if architecture is None:
        raise JobFailed(
            "architecture_required",
            "a safetensors teacher holds only weights: give teacher_architecture so they can be loaded",
        )
    try:
        with safe_open(path, framework="pt") as weights:  # the header only: names, shapes
            shapes = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except Exception as error:
        raise JobFailed(
            "teacher_load_failed", f"{path.name} is not a valid safetensors file: {error}"
        ) from None
    with torch.device("meta"):  # the declared model's names and shapes, without allocating it
        expected = {
            name: tuple(tensor.shape) for name, tensor in build_model(architecture).state_dict().items()
        }
    problems = state_dict_mismatches(shapes, expected)
    if problems:
        raise JobFailed(
            "teacher_load_failed",
            f"{path.name} does not match teacher_architecture: {capped_list(problems)}",
        )
    model = build_model(architecture)
    model.load_state_dict(load_file(path, device="cpu"), strict=True)
    return model.eval()


def _load_hf(
    folder: Path, architecture: ArchitectureSpec | HFSpec | None, layers: Sequence[str]
) -> nn.Module:
    if not isinstance(architecture, HFSpec):
        raise JobFailed(
            "architecture_required",
            "an hf teacher is loaded by its config: give its teacher_architecture as an hf spec (the service "
            "reads it from the folder's config.json)",
        )
    return load_hf_model(folder, architecture, attention_implementation(layers))


def _load_exported_program(path: Path, tapped: bool) -> nn.Module:
    try:
        program = torch.export.load(path)
        module = _unflattened(program) if tapped else None
        if module is None:
            module = program.module()
    except Exception as error:
        raise JobFailed(
            "teacher_load_failed", f"{path.name} is not a valid torch.export (.pt2) program: {error}"
        ) from None
    try:
        module.eval()
    except NotImplementedError:
        pass  # unlifted exported modules refuse train()/eval(); see load_teacher
    return module


def _unflattened(program: torch.export.ExportedProgram) -> nn.Module | None:
    """The program with its original module hierarchy, or None where torch cannot rebuild it.

    `program.module()` is one flat graph: forward hooks on its submodules never fire. The unflattened
    module computes the same and calls a submodule per original module, so feature pairs and TinyBERT
    can tap a pt2 teacher's layers by path. It is slower (2.6x on a small CNN), hence only when tapped.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecations
            return torch.export.unflatten(program)
    except Exception:
        return None


def state_dict_mismatches(checkpoint: dict[str, tuple], expected: dict[str, tuple]) -> list[str]:
    """Every name or shape that keeps a checkpoint of tensors of these shapes from loading into a model
    with the `expected` ones."""
    missing = [f"missing key {key}" for key in expected if key not in checkpoint]
    unexpected = [f"unexpected key {key}" for key in checkpoint if key not in expected]
    wrong_shapes = [
        f"{key}: checkpoint {list(checkpoint[key])} vs architecture {list(shape)}"
        for key, shape in expected.items()
        if key in checkpoint and checkpoint[key] != shape
    ]
    return missing + unexpected + wrong_shapes
