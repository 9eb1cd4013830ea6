"""Small generated data and teachers for the tests (no downloads, no shared datasets)."""

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from worker.engine.models import build_model
from worker.engine.specs import MLPSpec


def blobs(n: int, dim: int = 16, classes: int = 4, seed: int = 0, spread: float = 1.6):
    """Gaussian clusters, one per class: easy enough for tiny models, hard enough to need training."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(1234).normal(0, 1, (classes, dim)) * spread
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.normal(0, 1, (n, dim))
    return x.astype(np.float32), y.astype(np.int64)


def save_npz(path: Path, x, y=None) -> Path:
    arrays = {"x": x} if y is None else {"x": x, "y": y}
    np.savez(path, **arrays)
    return path


def train_teacher(spec: MLPSpec, x, y, epochs: int = 30, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        for i in range(0, len(xs), 64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xs[i : i + 64]), ys[i : i + 64]).backward()
            optimizer.step()
    return model.eval()


def save_teacher(path: Path, model: torch.nn.Module) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def accuracy(logits: torch.Tensor, y) -> float:
    return (logits.argmax(1) == torch.as_tensor(y)).float().mean().item()
