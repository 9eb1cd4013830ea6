"""Make a teacher and a dataset to try the service with: what a user does on their own machine.

    .venv/bin/python examples/toy_teacher.py /tmp/distill-demo

writes teacher.safetensors (a 16-128-128-4 MLP trained on Gaussian clusters), train.npz and
validation.npz, and prints the teacher's architecture as the job request wants it.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

ARCHITECTURE = {"family": "mlp", "input_shape": [16], "num_classes": 4, "hidden_sizes": [128, 128]}


def blobs(n: int, dim: int = 16, classes: int = 4, seed: int = 0, spread: float = 1.6):
    """Gaussian clusters, one per class: easy for small models, yet they need training."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(1234).normal(0, 1, (classes, dim)) * spread
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.normal(0, 1, (n, dim))
    return x.astype(np.float32), y.astype(np.int64)


def fit(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        for i in range(0, len(xs), 64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xs[i : i + 64]), ys[i : i + 64]).backward()
            optimizer.step()
    return model.eval()


def main(out: Path) -> None:
    from engine.models.registry import build_model
    from engine.plan.specs import MLPSpec

    out.mkdir(parents=True, exist_ok=True)
    x, y = blobs(4000, seed=0)
    x_val, y_val = blobs(1000, seed=1)
    teacher = fit(build_model(MLPSpec(**ARCHITECTURE)), x, y, epochs=8)
    save_file(teacher.state_dict(), str(out / "teacher.safetensors"))
    np.savez(out / "train.npz", x=x, y=y)
    np.savez(out / "validation.npz", x=x_val, y=y_val)
    print(json.dumps(ARCHITECTURE))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "distill-demo"))
