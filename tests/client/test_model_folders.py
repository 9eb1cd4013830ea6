"""A transformers model folder archived on the user's machine as the service reads it: the files
`from_pretrained` needs and nothing else, pickled weights made safetensors first (shards and their
index too); and a model folder's zip unpacked so `from_pretrained` loads it, every hostile member
refused with nothing written."""

import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill_client import DistillError, ModelFolderError, convert, model_folder, unpack_model_folder
from distill_client.convert import save_safetensors
from distill_client.model_folder import archived_model_folder
from engine.plan import hf_archive
from engine.plan.hf_archive import HFFolder, inspect_hf_archive
from tests.hf_archives import (
    LIMITS,
    TOKENIZER_FILES,
    hand_made,
    in_folder,
    pickle_weights,
    tiny_bert,
    write_folder,
    zip_archive,
    zip_symlink,
)

# What a training run leaves beside the model, which the service never unpacks.
LEFT_BEHIND = {
    "training_args.bin": b"pickle",
    "optimizer.pt": b"pickle",
    "scheduler.pt": b"pickle",
    "modeling_bert.py": b"import os",
    "README.md": b"# bert",
    "checkpoint-10/config.json": b"{}",
    ".git/HEAD": b"ref: refs/heads/main",
}


@pytest.fixture
def bert(tmp_path) -> tuple[Path, int]:
    """A tiny BertForSequenceClassification's save_pretrained folder, with a tokenizer, and its parameters."""
    files, parameters = tiny_bert()
    folder = write_folder(tmp_path / "bert", {**files, **TOKENIZER_FILES})
    for name, content in LEFT_BEHIND.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(content)
    return folder, parameters


def inspected(archive: Path) -> HFFolder:
    with archive.open("rb") as f:
        return inspect_hf_archive(f, LIMITS, ("bert",))


def test_the_names_are_those_the_service_unpacks():
    for name in ("CONFIG", "PREPROCESSOR", "GENERATION_CONFIG", "TOKENIZER_FILES", "SENTENCEPIECE_SUFFIX"):
        assert getattr(model_folder, name) == getattr(hf_archive, name), name
    assert (convert.WEIGHTS, convert.WEIGHTS_INDEX) == (hf_archive.WEIGHTS, hf_archive.WEIGHTS_INDEX)


def test_the_archive_holds_what_from_pretrained_reads_and_nothing_else(bert):
    folder, parameters = bert
    with archived_model_folder(folder) as archive:
        read = inspected(archive)
        with zipfile.ZipFile(archive) as zipped:
            stored = {info.filename: info.compress_type for info in zipped.infolist()}
    assert archive.name == "bert.zip"
    assert sorted(stored) == sorted(read.unpacked) and read.skipped == []
    assert sorted(stored) == sorted(["config.json", "model.safetensors", *TOKENIZER_FILES])
    assert read.parameters == parameters
    assert stored["model.safetensors"] == zipfile.ZIP_STORED  # weights do not compress
    assert stored["config.json"] == stored["vocab.txt"] == zipfile.ZIP_DEFLATED
    assert not archive.exists()  # the temporary archive is gone once uploaded


@pytest.mark.parametrize("shards", [1, 2])
def test_pickled_weights_are_made_safetensors_and_load_as_they_were(bert, tmp_path, shards):
    folder, parameters = bert
    weights = pickle_weights(folder, shards)
    told = []
    with archived_model_folder(folder, on_converted=lambda *names: told.append(names)) as archive:
        read = inspected(archive)
        unpacked = unpack_model_folder(archive, tmp_path / "unpacked")
    if shards == 1:
        assert told == [(["pytorch_model.bin"], ["model.safetensors"])]
        assert read.weights == ["model.safetensors"]
    else:
        converted = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        assert told == [
            (["pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin",
              "pytorch_model-00002-of-00002.bin"], [*converted, "model.safetensors.index.json"])
        ]  # fmt: skip
        assert read.weights == converted  # the index names each shard's tensors: the service checked them
    assert read.parameters == parameters
    assert not any(name.endswith(".bin") for name in read.unpacked)
    assert sorted(path.name for path in unpacked.iterdir()) == sorted(read.unpacked)

    from transformers import BertForSequenceClassification

    loaded = BertForSequenceClassification.from_pretrained(unpacked).state_dict()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in weights.items())


def test_a_tensor_under_two_names_is_saved_under_each(tmp_path):
    embeddings = torch.arange(12.0).reshape(3, 4)
    tied = {"embeddings.weight": embeddings, "decoder.weight": embeddings, "first_row": embeddings[0]}
    saved = load_file(save_safetensors(tied, tmp_path / "tied.safetensors"))
    assert saved.keys() == tied.keys()
    assert all(torch.equal(saved[name], tensor) for name, tensor in tied.items())


@pytest.mark.parametrize(
    "missing, says",
    [("config.json", "holds no config.json"), ("model.safetensors", "holds no weights")],
)
def test_a_folder_that_is_no_model_is_refused(bert, missing, says):
    folder, _ = bert
    (folder / missing).unlink()
    with pytest.raises(ModelFolderError, match=says):
        with archived_model_folder(folder):
            pass


def test_an_index_naming_a_shard_the_folder_lacks_is_refused(bert):
    folder, _ = bert
    pickle_weights(folder, shards=2)
    (folder / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(DistillError, match="'pytorch_model-00002-of-00002.bin', which is no file"):
        with archived_model_folder(folder):
            pass


# Unpacking


@pytest.fixture
def unpacked_before(tmp_path) -> Path:
    """What an earlier download unpacked."""
    return write_folder(tmp_path / "out" / "student.hf", {"config.json": b"{}"})


def test_a_model_folder_in_one_folder_of_the_zip_replaces_what_was_unpacked(tmp_path, unpacked_before):
    files = hand_made(**TOKENIZER_FILES)
    (tmp_path / "student.hf.zip").write_bytes(zip_archive(in_folder(files, "student")))
    assert unpack_model_folder(tmp_path / "student.hf.zip", unpacked_before) == unpacked_before
    assert {p.name: p.read_bytes() for p in unpacked_before.iterdir()} == files
    assert [p.name for p in unpacked_before.parent.iterdir()] == ["student.hf"]


def member_declaring_less(files: dict[str, bytes], name: str) -> bytes:
    """A zip whose directory declares one byte less for `name` than its member holds."""
    content = bytearray(zip_archive(files, zipfile.ZIP_STORED))
    entry = content.rfind(name.encode()) - 46  # the central directory's entry: 46 bytes, then the name
    declared = int.from_bytes(content[entry + 24 : entry + 28], "little")
    content[entry + 24 : entry + 28] = (declared - 1).to_bytes(4, "little")
    return bytes(content)


HOSTILE = {
    "traversal": (zip_archive({**hand_made(), "../evil.txt": b"x"}), "leads out of the folder"),
    "traversal inside": (zip_archive({**hand_made(), "a/../../evil.txt": b"x"}), "leads out of the folder"),
    "absolute path": (zip_archive({**hand_made(), "/tmp/evil.txt": b"x"}), "absolute path"),
    "windows absolute path": (zip_archive({**hand_made(), "C:/evil.txt": b"x"}), "absolute path"),
    "backslash": (zip_archive({**hand_made(), "..\\evil.txt": b"x"}), "absolute path"),
    "symlink": (zip_symlink(hand_made(), "vocab.txt", "/etc/passwd"), "link"),
    "more bytes than declared": (member_declaring_less(hand_made(), "config.json"), "no readable zip"),
    "no model": (zip_archive({"README.md": b"x"}), "no config.json"),
    "no zip": (b"not a zip", "no readable zip"),
}


@pytest.mark.parametrize("content, says", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_zip_is_refused_and_nothing_is_written(tmp_path, unpacked_before, content, says):
    (tmp_path / "student.hf.zip").write_bytes(content)
    with pytest.raises(ModelFolderError, match=says):
        unpack_model_folder(tmp_path / "student.hf.zip", unpacked_before)
    assert [p.name for p in unpacked_before.parent.iterdir()] == ["student.hf"]
    assert [p.name for p in unpacked_before.iterdir()] == ["config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "student.hf.zip"]
