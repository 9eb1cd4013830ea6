"""A pickled PyTorch state dict (`.pt`, `.pth`) turned into safetensors on the user's own machine, so the
service never receives a pickle. The one part of the client that needs torch (and safetensors)."""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distill_client.errors import DistillError

PICKLED = (".pt", ".pth", ".bin")


@contextmanager
def as_safetensors(path: Path) -> Iterator[Path]:
    """`<stem>.safetensors` in a temporary folder, with the tensors of the state dict at `path`."""
    try:
        import torch
        from safetensors.torch import save_file
    except ImportError:
        raise DistillError(
            f"{path.name} is a pickled PyTorch file; converting it to safetensors here needs torch and "
            "safetensors (pip install torch safetensors), or save it with safetensors yourself"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no code runs
    except Exception as exc:
        raise DistillError(f"cannot read {path} as a PyTorch state dict: {exc}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DistillError(f"{path} holds no state dict (a dict of tensors): save model.state_dict()")
    with tempfile.TemporaryDirectory(prefix="distill-upload-") as folder:
        converted = Path(folder) / f"{path.stem}.safetensors"
        save_file(
            {name: t.detach().clone().contiguous() for name, t in state.items()}, str(converted)
        )  # unshared
        yield converted
