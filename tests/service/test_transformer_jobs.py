"""Jobs with transformer models: text data needs a tokenizer, TinyBERT (`distillation.transformer`)
needs transformers of declared architecture and a layer map that fits; each bad request is a 422
naming the field, and creates no job."""

import json

import pytest

from tests.service.helpers import (
    TOKENIZER,
    assert_error,
    dataset_bytes,
    job_request,
    mlp_spec,
    newest_id,
    pt2_teacher,
    upload_ok,
)

TINYBERT_DEFAULTS = {
    "embedding_weight": 1.0,
    "hidden_weight": 1.0,
    "attention_weight": 1.0,
    "layer_map": None,
}


def transformer_spec(num_layers: int = 2, max_length: int = 16, **fields) -> dict:
    return {
        "family": "transformer",
        "vocab_size": 100,
        "max_length": max_length,
        "num_classes": 3,
        "hidden_size": 16,
        "num_layers": num_layers,
        "num_heads": 2,
        "intermediate_size": 32,
        **fields,
    }


def jsonl(*texts: str) -> bytes:
    return b"".join(json.dumps({"text": text, "label": 0}).encode() + b"\n" for text in texts)


@pytest.fixture
def text_file(client) -> dict:
    return upload_ok(client, jsonl("a b", "b a"), "dataset", "train.jsonl")


@pytest.fixture
def tokenizer_file(client) -> dict:
    return upload_ok(client, TOKENIZER, "tokenizer", "tokenizer.json")


def text_request(teacher_id: str, dataset_id: str, tokenizer_id: str | None = None, **sections) -> dict:
    """A 2-layer transformer teacher into a 1-layer transformer student, with TinyBERT on. Keyword
    arguments update `dataset`, `distillation` and `training`, and replace other sections."""
    request = job_request(
        teacher_id,
        dataset_id,
        teacher={"file_id": teacher_id, "architecture": transformer_spec(num_layers=2)},
        student={"architecture": transformer_spec(num_layers=1)},
        dataset={"train_file_id": dataset_id, "tokenizer_file_id": tokenizer_id},
        distillation={"transformer": {}},
    )
    for name, values in sections.items():
        merged = name in ("dataset", "distillation", "training")
        request[name] = {**request.get(name, {}), **values} if merged else values
    return request


def rejected(client, request: dict, param: str, code: str) -> dict:
    newest = newest_id(client, "jobs")
    error = assert_error(client.post("/v1/jobs", json=request), 422, param, code)
    assert newest_id(client, "jobs") == newest
    return error


def test_a_tinybert_job_over_text_is_created_with_every_default(
    client, teacher_file, text_file, tokenizer_file
):
    response = client.post(
        "/v1/jobs", json=text_request(teacher_file["id"], text_file["id"], tokenizer_file["id"])
    )
    assert response.status_code == 201, response.text
    request = response.json()["request"]
    assert request["dataset"] == {
        "train_file_id": text_file["id"],
        "validation_file_id": None,
        "tokenizer_file_id": tokenizer_file["id"],
        "max_length": None,
        "packing": None,
        "truncation": "error",
    }
    assert request["distillation"]["transformer"] == TINYBERT_DEFAULTS
    assert request["student"]["architecture"]["num_layers"] == 1
    # The job reads the tokenizer: it cannot be deleted while the job is queued.
    assert_error(client.delete(f"/v1/files/{tokenizer_file['id']}"), 409, None, "file_in_use")


def test_given_tinybert_settings_are_kept(client, teacher_file, text_file, tokenizer_file):
    settings = {"embedding_weight": 0.0, "hidden_weight": 2.5, "attention_weight": 1.0, "layer_map": [0]}
    request = text_request(
        teacher_file["id"], text_file["id"], tokenizer_file["id"], distillation={"transformer": settings}
    )
    response = client.post("/v1/jobs", json=request)
    assert response.status_code == 201, response.text
    assert response.json()["request"]["distillation"]["transformer"] == settings


def test_a_student_derived_from_a_transformer_teacher_gets_tinybert(
    client, teacher_file, text_file, tokenizer_file
):
    request = text_request(
        teacher_file["id"], text_file["id"], tokenizer_file["id"], student={"derive": {"depth": 0.5}}
    )
    response = client.post("/v1/jobs", json=request)
    assert response.status_code == 201, response.text
    assert response.json()["request"]["student"]["architecture"]["num_layers"] == 1


def test_npz_token_ids_need_no_tokenizer(client, teacher_file, dataset_file):
    response = client.post("/v1/jobs", json=text_request(teacher_file["id"], dataset_file["id"]))
    assert response.status_code == 201, response.text
    assert response.json()["request"]["dataset"]["tokenizer_file_id"] is None


# Text data and tokenizers


@pytest.mark.parametrize("role", ["train", "validation"])
def test_json_lines_need_a_tokenizer(client, teacher_file, dataset_file, text_file, role):
    train, validation = (text_file, None) if role == "train" else (dataset_file, text_file)
    request = text_request(teacher_file["id"], train["id"])
    if validation:
        request["dataset"]["validation_file_id"] = validation["id"]
    error = rejected(client, request, "dataset.tokenizer_file_id", "tokenizer_required")
    assert f"dataset.{role}_file_id is a JSON Lines" in error["message"]


def test_tokenizer_with_wrong_purpose(client, teacher_file, text_file, dataset_file):
    request = text_request(teacher_file["id"], text_file["id"], dataset_file["id"])
    error = rejected(client, request, "dataset.tokenizer_file_id", "wrong_file_purpose")
    assert "'dataset'" in error["message"] and "'tokenizer'" in error["message"]


def test_unknown_tokenizer_file(client, teacher_file, text_file):
    request = text_request(teacher_file["id"], text_file["id"], "file-nope")
    assert_error(client.post("/v1/jobs", json=request), 404, "dataset.tokenizer_file_id", "not_found")


def test_json_lines_need_a_transformer_student(client, teacher_file, text_file, tokenizer_file):
    request = job_request(teacher_file["id"], text_file["id"])
    request["dataset"]["tokenizer_file_id"] = tokenizer_file["id"]
    error = rejected(client, request, "dataset.train_file_id", "incompatible_dataset")
    assert "'jsonl'" in error["message"] and "mlp" in error["message"]


def test_a_tokenizer_for_a_student_that_reads_features_is_refused(
    client, teacher_file, dataset_file, tokenizer_file
):
    request = job_request(teacher_file["id"], dataset_file["id"])
    request["dataset"]["tokenizer_file_id"] = tokenizer_file["id"]
    rejected(client, request, "dataset.tokenizer_file_id", "unexpected_tokenizer")


def test_a_transformer_student_needs_a_transformer_teacher(client, teacher_file, dataset_file):
    request = text_request(
        teacher_file["id"],
        dataset_file["id"],
        teacher={"file_id": teacher_file["id"], "architecture": mlp_spec()},
        distillation={"transformer": None},
    )
    error = rejected(client, request, "teacher.architecture", "incompatible_architectures")
    assert "mlp" in error["message"] and "transformer" in error["message"]


def test_the_student_reads_no_longer_sequences_than_the_teacher(client, teacher_file, dataset_file):
    request = text_request(
        teacher_file["id"], dataset_file["id"], student={"architecture": transformer_spec(1, max_length=32)}
    )
    error = rejected(client, request, "student.architecture.max_length", "incompatible_shapes")
    assert "32" in error["message"] and "16" in error["message"]


# TinyBERT


def test_tinybert_needs_a_transformer_student(client, teacher_file, dataset_file):
    request = job_request(teacher_file["id"], dataset_file["id"], distillation={"transformer": {}})
    error = rejected(client, request, "distillation.transformer", "transformer_required")
    assert "mlp" in error["message"]


def test_tinybert_needs_the_teachers_architecture(client, dataset_file):
    pt2 = upload_ok(client, pt2_teacher(), "teacher", "teacher.pt2")
    request = text_request(pt2["id"], dataset_file["id"], teacher={"file_id": pt2["id"]})
    error = rejected(client, request, "distillation.transformer", "transformer_required")
    assert "pt2" in error["message"]


@pytest.mark.parametrize(
    ("layer_map", "words"),
    [
        ([0, 1], ["2 entries", "1 layers", "0 to 1"]),
        ([2], ["[2]", "2 layers", "[0, 1]"]),
        ([-1], ["[-1]", "[0, 1]"]),
    ],
    ids=["wrong length", "beyond the teacher", "negative"],
)
def test_a_layer_map_that_does_not_fit_is_refused(client, teacher_file, dataset_file, layer_map, words):
    request = text_request(
        teacher_file["id"], dataset_file["id"], distillation={"transformer": {"layer_map": layer_map}}
    )
    error = rejected(client, request, "distillation.transformer.layer_map", "invalid_layer_map")
    assert all(word in error["message"] for word in words), error["message"]


def test_tinybert_weights_cannot_all_be_zero(client, teacher_file, dataset_file):
    zero = {"embedding_weight": 0, "hidden_weight": 0, "attention_weight": 0}
    request = text_request(teacher_file["id"], dataset_file["id"], distillation={"transformer": zero})
    assert_error(client.post("/v1/jobs", json=request), 422, "distillation.transformer")


def test_tinybert_alone_is_a_loss(client, teacher_file, dataset_file):
    request = text_request(
        teacher_file["id"], dataset_file["id"], distillation={"alpha": 0, "beta": 0, "transformer": {}}
    )
    assert client.post("/v1/jobs", json=request).status_code == 201


def test_tinybert_with_born_again_generations_is_refused(client, teacher_file, dataset_file):
    request = text_request(
        teacher_file["id"], dataset_file["id"], distillation={"transformer": {}, "method": "born_again"}
    )
    rejected(client, request, "distillation.transformer", "unsupported_combination")


def test_the_schema_documents_the_new_fields(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["DatasetRef"]["properties"]["tokenizer_file_id"]["description"]
    tinybert = schemas["TransformerDistillation"]["properties"]
    assert set(tinybert) == set(TINYBERT_DEFAULTS)
    assert all(field.get("description") for field in tinybert.values())


def test_npz_datasets_still_serve_other_students(client, teacher_file):
    dataset = upload_ok(client, dataset_bytes(), "dataset", "train.npz")
    assert client.post("/v1/jobs", json=job_request(teacher_file["id"], dataset["id"])).status_code == 201
