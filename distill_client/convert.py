"""Pickled PyTorch weights turned into safetensors on the user's own machine, so the service never receives
a pickle: a state dict (`.pt`, `.pth`), or the `pytorch_model.bin` (or its shards) of a transformers
folder. The one part of the client that needs torch (and safetensors)."""

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distill_client.errors import DistillError

PICKLED = (".pt", ".pth", ".bin")
PICKLED_WEIGHTS = "pytorch_model.bin"  # what transformers' save_pretrained wrote before safetensors
PICKLED_INDEX = "pytorch_model.bin.index.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
METADATA = {"format": "pt"}  # what save_pretrained writes into its safetensors: older transformers need it


@contextmanager
def as_safetensors(path: Path) -> Iterator[Path]:
    """`<stem>.safetensors` in a temporary folder, with the tensors of the state dict at `path`."""
    with tempfile.TemporaryDirectory(prefix="distill-upload-") as folder:
        converted = Path(folder) / f"{path.stem}.safetensors"
        save_safetensors(load_state_dict(path), converted)
        yield converted


def pickled_folder_weights(folder: Path) -> list[str] | None:
    """The pickled weights of a `save_pretrained` folder that has no safetensors ones: `pytorch_model.bin`,
    or the index and the shards it names; None if it has neither."""
    if (folder / PICKLED_WEIGHTS).is_file():
        return [PICKLED_WEIGHTS]
    if (folder / PICKLED_INDEX).is_file():
        return [PICKLED_INDEX, *index_shards(folder / PICKLED_INDEX)]
    return None


def folder_weights_as_safetensors(folder: Path, workspace: Path) -> Iterator[tuple[str, Path]]:
    """The folder's pickled weights (`pickled_folder_weights`) as the files save_pretrained writes now:
    (the name in the folder, the file written under `workspace`), one at a time, so that only one shard
    is in memory and on disk at once: `model.safetensors`, or each `model-0000x-of-0000y.safetensors`
    and then `model.safetensors.index.json`, whose weight map names each shard's tensors."""
    if (folder / PICKLED_WEIGHTS).is_file():
        yield WEIGHTS, save_safetensors(load_state_dict(folder / PICKLED_WEIGHTS), workspace / WEIGHTS)
        return
    weight_map = {}
    for shard in index_shards(folder / PICKLED_INDEX):
        state = load_state_dict(folder / shard)
        name = safetensors_name(shard)
        weight_map |= dict.fromkeys(state, name)
        yield name, save_safetensors(state, workspace / name)
        del state
    metadata = json.loads((folder / PICKLED_INDEX).read_text()).get("metadata") or {}
    converted_index = {"metadata": metadata, "weight_map": weight_map}
    (workspace / WEIGHTS_INDEX).write_text(json.dumps(converted_index, indent=2, sort_keys=True))
    yield WEIGHTS_INDEX, workspace / WEIGHTS_INDEX


def safetensors_name(pickled: str) -> str:
    """The name save_pretrained gives the safetensors file of a pickled one: `pytorch_model.bin` ->
    `model.safetensors`, `pytorch_model-00001-of-00002.bin` -> `model-00001-of-00002.safetensors`."""
    stem = pickled.removesuffix(".bin")
    if stem.startswith("pytorch_model"):
        stem = "model" + stem.removeprefix("pytorch_model")
    return f"{stem}.safetensors"


def index_shards(index: Path) -> list[str]:
    """The shards the weights index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`)
    names in its weight map, each checked to be a file of the index's own folder."""
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DistillError(f"{index} is no weights index with a weight_map ({exc})") from None
    for shard in shards:
        if not isinstance(shard, str) or Path(shard).name != shard or not (index.parent / shard).is_file():
            raise DistillError(f"{index} names the shard {shard!r}, which is no file of its folder")
    return sorted(shards)


def load_state_dict(path: Path) -> dict:
    """The tensors of the state dict pickled at `path`, unpickled as tensors only: no code runs."""
    torch = _torch(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DistillError(f"cannot read {path} as a PyTorch state dict: {exc}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DistillError(f"{path} holds no state dict (a dict of tensors): save model.state_dict()")
    return state


def save_safetensors(state: dict, destination: Path) -> Path:
    """Write the state dict to `destination` as safetensors. A tensor kept under several names (tied
    embeddings) is written once per name: safetensors stores no tensor twice, and `from_pretrained` ties
    the weights again as it loads them."""
    from safetensors.torch import save_file

    storages: set[int] = set()
    unshared = {}
    for name, tensor in state.items():
        storage = tensor.untyped_storage().data_ptr()
        tensor = tensor.detach()
        unshared[name] = (tensor.clone() if storage in storages else tensor).contiguous()
        storages.add(storage)
    save_file(unshared, str(destination), metadata=METADATA)
    return destination


def _torch(path: Path):
    try:
        import safetensors.torch  # noqa: F401  (what `save_safetensors` needs: missing, say so now)
        import torch
    except ImportError:
        raise DistillError(
            f"{path.name} is pickled PyTorch weights; converting them to safetensors here needs torch and "
            "safetensors (pip install torch safetensors), or save them with safetensors yourself"
        ) from None
    return torch
