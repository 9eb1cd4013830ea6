"""An archived `save_pretrained` folder: what the upload reads of it (`inspect_hf_archive`) and what a worker
unpacks (`unpack_hf_archive`) from .zip, .tar and .tar.gz alike; every hostile archive refused by both, and
nothing but the model's own files ever written."""

import io
import json

import pytest

from engine.plan import archives, hf_archive
from engine.plan.hf_archive import (
    HFArchiveRejected,
    archive_kind,
    inspect_hf_archive,
    unpack_hf_archive,
)
from engine.plan.hf_models import HF_TASKS
from tests.hf_archives import (
    ARCHIVES,
    HAND_MADE_PARAMETERS,
    LIMITS,
    RATIO_CHECKED_ABOVE,
    TOKENIZER_FILES,
    hand_made,
    hostile_archives,
    in_folder,
    tar_archive,
    tiny_bert,
    tiny_lm,
    tiny_vit,
    zip_archive,
)

ALL_TYPES = tuple(HF_TASKS)
HOSTILE = hostile_archives()


@pytest.fixture(autouse=True)
def small_bomb_threshold(monkeypatch):
    monkeypatch.setattr(archives, "RATIO_CHECKED_ABOVE", RATIO_CHECKED_ABOVE)


def inspect(content: bytes, allowed=ALL_TYPES):
    return inspect_hf_archive(io.BytesIO(content), LIMITS, allowed)


def unpack(content: bytes, tmp_path, allowed=ALL_TYPES):
    archive = tmp_path / "model.archive"
    archive.write_bytes(content)
    return unpack_hf_archive(archive, tmp_path / "model", LIMITS, allowed)


# What the upload reads


@pytest.mark.parametrize("kind", ARCHIVES)
@pytest.mark.parametrize("folder", ["", "my-model"])
def test_a_saved_model_is_read_from_each_archive_with_or_without_its_folder(kind, folder):
    files, parameters = tiny_bert()
    content = ARCHIVES[kind](in_folder(files, folder) if folder else files)
    assert archive_kind(io.BytesIO(content)) == kind
    model = inspect(content)
    assert model.root == (f"{folder}/" if folder else "")
    assert (model.model_type, model.task, model.labels) == ("bert", "text", ["LABEL_0", "LABEL_1", "LABEL_2"])
    assert model.parameters == parameters
    assert model.weights == ["model.safetensors"]
    assert model.weights_bytes == len(files["model.safetensors"])
    assert model.config == json.loads(files["config.json"])
    assert (model.tokenizer_files, model.preprocessor, model.tokenizer_config, model.skipped) == (
        [],
        None,
        None,
        [],
    )


@pytest.mark.parametrize("kind", ARCHIVES)
def test_sharded_weights_count_every_shard(kind):
    files, parameters = tiny_bert(shard_size="2KB")
    shards = sorted(name for name in files if name.startswith("model-"))
    assert len(shards) > 1
    model = inspect(ARCHIVES[kind](files))
    assert model.weights == shards
    assert model.parameters == parameters
    assert model.weights_bytes == sum(len(files[name]) for name in shards)


def test_an_image_model_with_its_preprocessor():
    files, parameters = tiny_vit()
    model = inspect(tar_archive(in_folder(files, "vit"), gz=True))
    assert (model.model_type, model.task, model.parameters) == ("vit", "image", parameters)
    assert model.preprocessor == json.loads(files["preprocessor_config.json"])


@pytest.mark.parametrize("tied", [False, True], ids=["own head", "tied embeddings"])
def test_a_causal_language_model_is_read_with_its_chat_template_and_generation_config(tied, tmp_path):
    files, parameters = tiny_lm(tied)
    assert (b"lm_head.weight" in files["model.safetensors"]) != tied
    content = tar_archive(in_folder({**files, "README.md": b"# an LM"}, "lm"), gz=True)
    model = inspect(content)
    assert (model.model_type, model.task, model.labels, model.parameters) == (
        "llama",
        "causal-lm",
        [],
        parameters,
    )
    assert model.tokenizer_files == ["chat_template.jinja", "tokenizer.json", "tokenizer_config.json"]
    assert model.generation_config == json.loads(files["generation_config.json"])
    assert model.generation_config["top_k"] == 20 and model.skipped == ["lm/README.md"]
    folder, unpacked = unpack(content, tmp_path)
    assert unpacked == model
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == files


def test_tokenizer_files_are_kept_and_everything_else_skipped():
    extras = {
        "README.md": b"# a model",
        "training_args.bin": b"\x80\x02}q\x00.",  # a pickle: never unpickled, never unpacked
        "pytorch_model.bin": b"\x80\x02}q\x00.",
        "modeling_evil.py": b"import os",
        "spiece.model": b"sentencepiece",
        "checkpoint-1/model.safetensors": b"",
    }
    content = zip_archive(
        {**in_folder({**hand_made(), **TOKENIZER_FILES, **extras}, "m"), "__MACOSX/._m": b""}
    )
    model = inspect(content)
    assert model.tokenizer_files == sorted([*TOKENIZER_FILES, "spiece.model"])
    assert model.tokenizer_config == json.loads(TOKENIZER_FILES["tokenizer_config.json"])
    expected = [
        "README.md",
        "training_args.bin",
        "pytorch_model.bin",
        "modeling_evil.py",
        "checkpoint-1/model.safetensors",
    ]
    assert sorted(model.skipped) == sorted([*(f"m/{name}" for name in expected), "__MACOSX/._m"])
    assert model.parameters == HAND_MADE_PARAMETERS


def test_files_at_the_top_win_over_a_folder_beside_them():
    model = inspect(tar_archive({**hand_made(), **in_folder(hand_made({"model_type": "roberta"}), "old")}))
    assert (model.root, model.model_type) == ("", "bert")
    assert "old/config.json" in model.skipped


def test_the_server_narrows_the_model_types():
    with pytest.raises(HFArchiveRejected, match="'bert' is not one this server takes"):
        inspect(zip_archive(hand_made()), allowed=("vit", "resnet"))


def test_a_json_document_is_read_only_up_to_its_bound(monkeypatch):
    monkeypatch.setitem(hf_archive.DOCUMENT_BYTES, "config.json", 100)
    with pytest.raises(HFArchiveRejected, match="config.json takes more than 100 bytes"):
        inspect(zip_archive(hand_made({"notes": "x" * 100})))


@pytest.mark.parametrize("content", [b"", b"not an archive", b"\x1f\x8b\x08\x00garbage"])
def test_what_is_no_archive_is_refused(content):
    assert archive_kind(io.BytesIO(content)) is None
    with pytest.raises(HFArchiveRejected, match="no .zip, .tar or .tar.gz"):
        inspect(content)


@pytest.mark.parametrize("content, hint", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_archive_is_refused_at_upload(content, hint):
    with pytest.raises(HFArchiveRejected) as refused:
        inspect(content)
    assert hint.lower() in str(refused.value).lower()


# What a worker unpacks


@pytest.mark.parametrize("kind", ARCHIVES)
def test_unpacking_writes_the_files_from_pretrained_reads_and_nothing_else(kind, tmp_path):
    files, _ = tiny_bert(shard_size="2KB")
    extras = {
        "README.md": b"# a model",
        "training_args.bin": b"\x80.",
        "evil.py": b"import os",
        "sub/x.txt": b"",
    }
    content = ARCHIVES[kind](in_folder({**files, **TOKENIZER_FILES, **extras}, "my-model"))
    folder, model = unpack(content, tmp_path)
    assert folder == tmp_path / "model"
    assert model == inspect(content)
    assert sorted(path.name for path in folder.iterdir()) == sorted(model.unpacked)
    assert sorted(model.unpacked) == sorted([*files, *TOKENIZER_FILES])
    for name in model.unpacked:
        assert (folder / name).read_bytes() == {**files, **TOKENIZER_FILES}[name]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model", "model.archive"]


def test_unpacked_model_loads_and_answers_as_the_saved_one(tmp_path):
    """The unpacked folder is what `from_pretrained` needs: the same logits as the model saved."""
    import torch
    from transformers import AutoModelForSequenceClassification

    files, _ = tiny_bert()
    folder, _ = unpack(tar_archive(in_folder(files, "m"), gz=True), tmp_path)
    reference = tmp_path / "reference"
    reference.mkdir()
    for name, content in files.items():
        (reference / name).write_bytes(content)
    ids = torch.tensor([[2, 5, 6, 3]])
    logits = [
        AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True).eval()(ids).logits
        for path in (folder, reference)
    ]
    assert torch.equal(*logits)


def test_a_model_file_is_unpacked_flat_whatever_its_folder(tmp_path):
    folder, model = unpack(zip_archive(in_folder(hand_made(), "a")), tmp_path)
    assert model.root == "a/"
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize("content, hint", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_archive_is_refused_when_unpacked_and_leaves_nothing(content, hint, tmp_path):
    with pytest.raises(HFArchiveRejected) as refused:
        unpack(content, tmp_path)
    assert hint.lower() in str(refused.value).lower()
    assert list((tmp_path / "model").iterdir()) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model", "model.archive"]


def test_a_member_holding_fewer_bytes_than_declared_is_refused_when_unpacked(tmp_path):
    """The upload reads the declared sizes; unpacking counts the bytes themselves."""
    content = bytearray(zip_archive(hand_made(), compression=0))
    directory = content.rindex(b"PK\x01\x02")  # the last member's directory entry
    declared = int.from_bytes(content[directory + 24 : directory + 28], "little")
    content[directory + 24 : directory + 28] = (declared + 1000).to_bytes(4, "little")
    with pytest.raises(HFArchiveRejected, match="damaged|ends before"):
        unpack(bytes(content), tmp_path)


def test_unpacking_needs_an_empty_folder(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="empty folder"):
        unpack(zip_archive(hand_made()), tmp_path)
