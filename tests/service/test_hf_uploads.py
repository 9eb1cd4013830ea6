"""Teachers uploaded as an archived `save_pretrained` folder (format `hf`): the file answers with its model
(type, task, parameters, labels), the database keeps what the folder holds, and every hostile archive is a
422 that says what to do, with nothing stored."""

import json

import pytest
from sqlalchemy import select

from core.models import File
from engine.plan import archives
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
from tests.service.helpers import assert_error, upload, upload_ok

HOSTILE = hostile_archives()


@pytest.fixture
def test_limits(resources, monkeypatch):
    """The server's archive limits as small as `tests.hf_archives.LIMITS`, its bomb threshold, and every
    model type (the hostile language models' flaws are their own, not their type)."""
    monkeypatch.setattr(resources.settings, "hf_model_types", tuple(HF_TASKS))
    monkeypatch.setattr(resources.settings, "hf_max_archive_members", LIMITS.max_members)
    monkeypatch.setattr(resources.settings, "hf_max_member_bytes", LIMITS.max_member_bytes)
    monkeypatch.setattr(resources.settings, "hf_max_unpacked_bytes", LIMITS.max_unpacked_bytes)
    monkeypatch.setattr(archives, "RATIO_CHECKED_ABOVE", RATIO_CHECKED_ABOVE)


@pytest.mark.parametrize("kind", ARCHIVES)
def test_a_saved_text_classifier_is_an_hf_teacher(client, resources, kind):
    files, parameters = tiny_bert()
    body = upload_ok(client, ARCHIVES[kind]({**files, **TOKENIZER_FILES}), "teacher", f"bert.{kind}")
    assert body["format"] == "hf"
    assert body["model"] == {
        "model_type": "bert",
        "task": "text",
        "parameters": parameters,
        "num_labels": 3,
        "labels": ["LABEL_0", "LABEL_1", "LABEL_2"],
        "tokenizer": True,
        "preprocessor": False,
    }
    assert client.get(f"/v1/files/{body['id']}").json() == body
    assert client.get("/v1/files", params={"limit": 1}).json()["data"] == [body]
    with resources.database.sessions() as session:
        details = session.scalar(select(File.details).where(File.id == body["id"]))
    assert details["config"] == json.loads(files["config.json"])
    assert details["weights"] == ["model.safetensors"]
    assert details["tokenizer_files"] == sorted(TOKENIZER_FILES)


def test_a_saved_image_classifier_in_a_folder(client):
    files, parameters = tiny_vit()
    body = upload_ok(client, tar_archive(in_folder(files, "vit"), gz=True), "teacher", "vit.tar.gz")
    model = body["model"]
    assert (model["model_type"], model["task"], model["parameters"]) == ("vit", "image", parameters)
    assert (model["labels"], model["tokenizer"], model["preprocessor"]) == (
        ["LABEL_0", "LABEL_1"],
        False,
        True,
    )


def test_a_saved_causal_language_model_is_an_hf_teacher_unless_the_server_leaves_its_type_out(
    client, resources, monkeypatch
):
    files, parameters = tiny_lm(tied=True)
    monkeypatch.setattr(resources.settings, "hf_model_types", ("bert", "gpt2"))
    refused = client.post(
        "/v1/files",
        files={"file": ("llama.zip", zip_archive(in_folder(files, "lm")))},
        data={"purpose": "teacher"},
    )
    assert refused.status_code == 422 and "model_type 'llama' is not one this server takes" in refused.text
    monkeypatch.undo()
    body = upload_ok(client, zip_archive(in_folder(files, "lm")), "teacher", "llama.zip")
    assert body["model"] == {
        "model_type": "llama",
        "task": "causal-lm",
        "parameters": parameters,
        "num_labels": 0,
        "labels": [],
        "tokenizer": True,
        "preprocessor": False,
    }
    with resources.database.sessions() as session:
        details = session.scalar(select(File.details).where(File.id == body["id"]))
    assert details["generation_config"] == json.loads(files["generation_config.json"])
    assert "chat_template.jinja" in details["tokenizer_files"]


def test_many_labels_list_the_first_hundred(client):
    labels = {str(i): f"class {i}" for i in range(300)}
    body = upload_ok(client, zip_archive(hand_made({"id2label": labels})), "teacher", "many.zip")
    assert body["model"]["num_labels"] == 300
    assert body["model"]["labels"] == [f"class {i}" for i in range(100)]
    assert body["model"]["parameters"] == HAND_MADE_PARAMETERS


def test_the_server_narrows_the_model_types(client, resources, monkeypatch, nothing_stored):
    monkeypatch.setattr(resources.settings, "hf_model_types", ("vit",))
    error = assert_error(
        upload(client, zip_archive(hand_made()), "teacher", "bert.zip"), 422, "file", "invalid_file"
    )
    assert "model_type 'bert' is not one this server takes" in error["message"]


def test_a_zip_neither_pt2_nor_a_model_says_both(client, nothing_stored):
    error = assert_error(
        upload(client, zip_archive({"weights.bin": b"1234"}), "teacher", "t.zip"), 422, "file"
    )
    assert "torch.export" in error["message"] and "config.json" in error["message"]


@pytest.mark.parametrize("content, hint", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_archive_is_422_and_stores_nothing(client, test_limits, nothing_stored, content, hint):
    error = assert_error(upload(client, content, "teacher", "model.zip"), 422, "file", "invalid_file")
    assert hint.lower() in error["message"].lower(), error["message"]
    assert "'model.zip'" in error["message"]
