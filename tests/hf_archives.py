"""Archived `save_pretrained` folders for the `hf` teacher tests: real tiny transformers models, hand-made
folders (no transformers import: milliseconds), the archives (.zip, .tar, .tar.gz) that hold them, and the
hostile archives the upload and the worker's unpacking both refuse."""

import io
import json
import stat
import tarfile
import warnings
import zipfile
from functools import cache
from pathlib import Path

import numpy as np
from safetensors.numpy import save as save_safetensors

from engine.plan.hf_archive import HFArchiveLimits

# Small enough that the bombs and the oversized members below stay small.
LIMITS = HFArchiveLimits(max_members=50, max_member_bytes=1024 * 1024, max_unpacked_bytes=2 * 1024 * 1024)
RATIO_CHECKED_ABOVE = 256 * 1024  # patched over engine.plan.archives' 64 MiB, so a bomb of 1 MiB shows
TINY_BERT = dict(
    hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=30,
    max_position_embeddings=16, num_labels=3,
)  # fmt: skip
TINY_VIT = dict(
    hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, image_size=8,
    patch_size=4, num_channels=3, num_labels=2,
)  # fmt: skip
TOKENIZER_FILES = {
    "vocab.txt": "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]).encode(),
    "tokenizer_config.json": json.dumps({"do_lower_case": True, "model_max_length": 16}).encode(),
    "special_tokens_map.json": json.dumps({"pad_token": "[PAD]", "unk_token": "[UNK]"}).encode(),
}


def folder_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@cache
def tiny_bert(shard_size: str | None = None) -> tuple[dict[str, bytes], int]:
    """A `BertForSequenceClassification`'s `save_pretrained` files (its weights in shards of at most
    `shard_size`) and its parameters."""
    import tempfile

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**TINY_BERT))
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, **({"max_shard_size": shard_size} if shard_size else {}))
        return folder_files(Path(folder)), model.num_parameters()


@cache
def tiny_vit() -> tuple[dict[str, bytes], int]:
    """A `ViTForImageClassification`'s `save_pretrained` files, with its image processor's config."""
    import tempfile

    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(**TINY_VIT))
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        ViTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(folder)
        return folder_files(Path(folder)), model.num_parameters()


@cache
def tiny_lm(tied: bool) -> tuple[dict[str, bytes], int]:
    """A tiny Llama's `save_pretrained` files with its tokenizer, chat template and generation config (with
    `tied`, its weights hold the token embeddings once, no `lm_head.weight`), and its parameters."""
    import tempfile

    from transformers import GenerationConfig

    from tests.lm_model_factories import BOS, EOS, lm_folder

    generation = GenerationConfig(bos_token_id=BOS, eos_token_id=EOS, do_sample=True, top_k=20)
    with tempfile.TemporaryDirectory() as folder:
        saved = lm_folder(Path(folder), "llama", tied=tied, generation=generation)
        config = json.loads((saved / "config.json").read_text())
        embeddings = config["vocab_size"] * config["hidden_size"]
        head = 0 if tied else embeddings
        files = folder_files(saved)
    return files, _llama_parameters(config) + embeddings + head


def _llama_parameters(config: dict) -> int:
    """A Llama's parameters besides its embeddings and head: the layers' projections and norms, the final
    norm."""
    hidden, inner, head_dim = config["hidden_size"], config["intermediate_size"], config["head_dim"]
    attention = hidden * head_dim * (2 * config["num_attention_heads"] + 2 * config["num_key_value_heads"])
    layer = attention + 3 * hidden * inner + 2 * hidden
    return config["num_hidden_layers"] * layer + hidden


HAND_MADE_CONFIG = {
    "model_type": "bert",
    "hidden_size": 8,
    "num_hidden_layers": 1,
    "id2label": {"0": "negative", "1": "positive"},
}
HAND_MADE_PARAMETERS = 2 * 8 + 2
# A causal language model's config over the hand-made weights: no labels, its classes are its vocabulary.
HAND_MADE_LM = {"model_type": "llama", "vocab_size": 32, "id2label": None, "hidden_size": 8}


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    """The folder `save_pretrained` would have left: `files` written into it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def pickle_weights(folder: Path, shards: int = 1) -> dict:
    """Replace the folder's model.safetensors by the pickled weights older transformers wrote
    (`torch.save`: version 5 writes safetensors only): pytorch_model.bin, or `shards` shards of it and
    pytorch_model.bin.index.json. Returns the weights."""
    import torch
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    if shards == 1:
        torch.save(state, folder / "pytorch_model.bin")
        return state
    weight_map = {}
    for number in range(shards):
        shard = f"pytorch_model-{number + 1:05d}-of-{shards:05d}.bin"
        part = {name: state[name] for name in list(state)[number::shards]}
        torch.save(part, folder / shard)
        weight_map |= dict.fromkeys(part, shard)
    total_size = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return state


def hand_made(config: dict | None = None, **files: bytes) -> dict[str, bytes]:
    """A folder's files written by hand: a config (HAND_MADE_CONFIG's fields, and `config`'s over them)
    and a classifier head's safetensors weights; `files` are added or replace these."""
    weights = {"classifier.weight": np.ones((2, 8), np.float32), "classifier.bias": np.zeros(2, np.float32)}
    return {
        "config.json": json.dumps({**HAND_MADE_CONFIG, **(config or {})}).encode(),
        "model.safetensors": save_safetensors(weights),
        **files,
    }


def in_folder(files: dict[str, bytes], folder: str) -> dict[str, bytes]:
    return {f"{folder}/{name}": content for name, content in files.items()}


# Archives


def zip_archive(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def tar_archive(
    files: dict[str, bytes], gz: bool = False, entries: tuple[tarfile.TarInfo, ...] = ()
) -> bytes:
    """A tar of `files`, then of `entries` without data (links, devices, ...)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        for info in entries:
            archive.addfile(info)
    return buffer.getvalue()


ARCHIVES = {"zip": zip_archive, "tar": tar_archive, "tar.gz": lambda files: tar_archive(files, gz=True)}


def entry(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def zip_symlink(files: dict[str, bytes], name: str, target: str) -> bytes:
    buffer = io.BytesIO(zip_archive(files))
    with zipfile.ZipFile(buffer, "a") as archive:
        info = zipfile.ZipInfo(name)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, target)
    return buffer.getvalue()


def encrypted_zip(files: dict[str, bytes]) -> bytes:
    """A zip whose members are flagged encrypted in its directory (zipfile writes no encrypted members;
    the flag is what a reader goes by)."""
    content = bytearray(zip_archive(files))
    directory = content.find(b"PK\x01\x02")
    while directory != -1:
        content[directory + 8] |= 0x1  # the general purpose flags' first bit
        directory = content.find(b"PK\x01\x02", directory + 1)
    return bytes(content)


def zip_with_duplicate(files: dict[str, bytes], name: str) -> bytes:
    buffer = io.BytesIO(zip_archive(files))
    with zipfile.ZipFile(buffer, "a") as archive:
        with warnings.catch_warnings(action="ignore", category=UserWarning):
            archive.writestr(name, files[name])  # "Duplicate name": written all the same
    return buffer.getvalue()


def deep_json(depth: int) -> bytes:
    return (
        '{"model_type": "bert", "id2label": {"0": "a", "1": "b"}, "x": ' + "[" * depth + "]" * depth + "}"
    ).encode()


def index_of(shards: dict[str, list[str]]) -> bytes:
    weight_map = {tensor: shard for shard, tensors in shards.items() for tensor in tensors}
    return json.dumps({"metadata": {}, "weight_map": weight_map}).encode()


def sharded_hand_made(**index_changes: list[str]) -> dict[str, bytes]:
    """The hand-made head in two shards and their index (whose shards `index_changes` replace)."""
    shards = {
        "model-00001-of-00002.safetensors": ["classifier.weight"],
        "model-00002-of-00002.safetensors": ["classifier.bias"],
    }
    files = hand_made()
    del files["model.safetensors"]
    files["model-00001-of-00002.safetensors"] = save_safetensors(
        {"classifier.weight": np.ones((2, 8), np.float32)}
    )
    files["model-00002-of-00002.safetensors"] = save_safetensors({"classifier.bias": np.zeros(2, np.float32)})
    files["model.safetensors.index.json"] = index_of({**shards, **index_changes})
    return files


def hostile_archives() -> dict[str, tuple[bytes, str]]:
    """name: (an archive refused under LIMITS, with RATIO_CHECKED_ABOVE; words its refusal says)."""
    good = hand_made()
    zeros = bytes(1000 * 1024)
    without_weights = {name: content for name, content in good.items() if name != "model.safetensors"}
    return {
        "traversal": (zip_archive({**good, "../evil.txt": b"x"}), "leads out of the folder"),
        "traversal inside": (tar_archive({**good, "a/../../evil.txt": b"x"}), "leads out of the folder"),
        "absolute path": (tar_archive({**good, "/etc/cron.d/evil": b"x"}), "absolute path"),
        "windows absolute path": (zip_archive({**good, "C:/evil.txt": b"x"}), "absolute path"),
        "backslash": (zip_archive({**good, "..\\evil.txt": b"x"}), "backslash"),
        "control character": (zip_archive({**good, "evil\x1b[2J.txt": b"x"}), "control character"),
        "undecodable name": (tar_archive({**good, "evil-\udcff.txt": b"x"}), "UTF-8"),
        "symlink": (
            tar_archive(good, entries=(entry("tokenizer.json", tarfile.SYMTYPE, "/etc/passwd"),)),
            "link",
        ),
        "symlink in zip": (zip_symlink(good, "vocab.txt", "/etc/passwd"), "link"),
        "hardlink": (
            tar_archive(good, entries=(entry("vocab.txt", tarfile.LNKTYPE, "/etc/passwd"),)),
            "link",
        ),
        "device": (tar_archive(good, entries=(entry("vocab.txt", tarfile.CHRTYPE),)), "no regular file"),
        "fifo": (tar_archive(good, entries=(entry("pipe", tarfile.FIFOTYPE),)), "no regular file"),
        "zip bomb": (zip_archive({**good, "README.md": zeros}), "zip bomb"),
        "gzip bomb": (tar_archive({**good, "README.md": zeros}, gz=True), "gzip bomb"),
        "too many members": (zip_archive({**good, **{f"notes/{i}.txt": b"" for i in range(60)}}), "members"),
        "member too big": (
            tar_archive({**good, "README.md": bytes(LIMITS.max_member_bytes + 1)}),
            "one file",
        ),
        "too many bytes": (
            tar_archive({**good, **{f"{i}.md": bytes(LIMITS.max_member_bytes) for i in range(2)}}),
            "unpacked",
        ),
        "long pax header": (tar_archive({**good, "x" * (2 * 1024 * 1024): b""}), "tar header"),
        "damaged tar": (tar_archive({**good, "README.md": bytes(10_000)})[:-12_000], "damaged"),
        "duplicate name": (zip_with_duplicate(good, "config.json"), "twice"),
        "duplicate after normalising": (tar_archive({**good, "./config.json": good["config.json"]}), "twice"),
        "encrypted": (encrypted_zip(good), "encrypted"),
        "pickle only": (
            zip_archive({**without_weights, "pytorch_model.bin": b"\x80\x02}q\x00."}),
            "distill files upload",
        ),
        "no weights": (zip_archive(without_weights), "no model.safetensors"),
        "no config": (tar_archive({"model.safetensors": good["model.safetensors"]}), "no config.json"),
        "two models": (tar_archive({**in_folder(good, "a"), **in_folder(good, "b")}), "one model's folder"),
        "remote code": (zip_archive(hand_made({"auto_map": {"AutoModel": "modeling.Evil"}})), "auto_map"),
        "unknown model type": (zip_archive(hand_made({"model_type": "mamba"})), "model_type 'mamba'"),
        "unknown language model type": (
            zip_archive(hand_made(HAND_MADE_LM | {"model_type": "gpt_neox"})),
            "model_type 'gpt_neox'",
        ),
        "language model running code": (
            zip_archive(hand_made(HAND_MADE_LM | {"auto_map": {"AutoModelForCausalLM": "modeling.Evil"}})),
            "auto_map",
        ),
        "generation config running code": (
            zip_archive(
                {**hand_made(HAND_MADE_LM), "generation_config.json": json.dumps({"auto_map": {}}).encode()}
            ),
            "never runs",
        ),
        "generation config not JSON": (
            zip_archive({**hand_made(HAND_MADE_LM), "generation_config.json": b"{"}),
            "generation_config.json is not JSON",
        ),
        "absurd config": (zip_archive(hand_made({"num_hidden_layers": 10**9})), "num_hidden_layers"),
        "5,000-digit integer": (
            zip_archive({**good, "config.json": good["config.json"][:-1] + b', "x": ' + b"9" * 5000 + b"}"}),
            "not JSON",
        ),
        "nesting past the parser": (zip_archive({**good, "config.json": deep_json(100_000)}), "not JSON"),
        "deep nesting": (zip_archive({**good, "config.json": deep_json(100)}), "nests deeper"),
        "NaN": (zip_archive({**good, "config.json": b'{"model_type": "bert", "x": NaN}'}), "not JSON"),
        "NUL in a label": (zip_archive(hand_made({"id2label": {"0": "a\x00", "1": "b"}})), "NUL"),
        "config not an object": (zip_archive({**good, "config.json": b"[]"}), "no JSON object"),
        "no labels": (zip_archive(hand_made({"id2label": None, "num_labels": 0})), "at least 2"),
        "one label": (zip_archive(hand_made({"id2label": {"0": "only"}})), "at least 2"),
        "labels not 0..n-1": (zip_archive(hand_made({"id2label": {"1": "a", "2": "b"}})), "class ids"),
        "num_labels disagreeing": (zip_archive(hand_made({"num_labels": 3})), "num_labels"),
        "index naming an absent shard": (
            zip_archive(sharded_hand_made(**{"model-00003-of-00003.safetensors": ["extra"]})),
            "lacks",
        ),
        "index naming a path outside": (
            zip_archive(sharded_hand_made(**{"../model-00001-of-00002.safetensors": ["extra"]})),
            "of the folder itself",
        ),
        "shard holding other tensors": (
            zip_archive(
                sharded_hand_made(**{"model-00002-of-00002.safetensors": ["classifier.bias", "extra"]})
            ),
            "other tensors",
        ),
        "corrupt weights": (
            zip_archive({**good, "model.safetensors": good["model.safetensors"][:-8]}),
            "truncated",
        ),
        "tokenizer running code": (
            zip_archive(
                {**good, "tokenizer_config.json": json.dumps({"auto_map": {"AutoTokenizer": "x.T"}}).encode()}
            ),
            "never runs",
        ),
    }
