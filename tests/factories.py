"""Small generated data and teachers for the tests (no downloads, no shared datasets)."""

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from engine.export.onnx_model import export_onnx
from engine.models.registry import build_model
from examples.toy_teacher import blobs, fit

__all__ = ["blobs", "save_npz", "train_teacher", "save_teacher", "save_onnx_teacher", "accuracy"]


def save_npz(path: Path, x, y=None) -> Path:
    arrays = {"x": x} if y is None else {"x": x, "y": y}
    np.savez(path, **arrays)
    return path


def train_teacher(spec, x, y, epochs: int = 30, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return fit(build_model(spec), x, y, epochs, seed)


def save_teacher(path: Path, model: torch.nn.Module) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def save_onnx_teacher(path: Path, model: torch.nn.Module, example: torch.Tensor) -> Path:
    """The model as one ONNX file with a dynamic batch, as torch's exporter writes it for a user."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
    export_onnx(program, path.parent).rename(path)
    return path


def accuracy(logits: torch.Tensor, y) -> float:
    return (logits.argmax(1) == torch.as_tensor(y)).float().mean().item()
