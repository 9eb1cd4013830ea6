"""Job requests checked at once: each bad one is a 422 (404 for an unknown file) naming the field, and
creates no job."""

import copy
import json

import pytest

from tests.service.helpers import (
    TOKENIZER,
    assert_error,
    dataset_bytes,
    job_request,
    mlp_spec,
    newest_id,
    onnx_teacher,
    pt2_teacher,
    upload_ok,
)


def set_path(request: dict, path: str, value) -> dict:
    request = copy.deepcopy(request)
    *parents, last = path.split(".")
    node = request
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return request


def drop(request: dict, path: str) -> dict:
    request = copy.deepcopy(request)
    *parents, last = path.split(".")
    node = request
    for key in parents:
        node = node[key]
    del node[last]
    return request


# (change to a valid request, param) — all schema and range errors: 422 invalid_request
SCHEMA_ERRORS = {
    "temperature 0": (lambda r: set_path(r, "distillation.temperature", 0), "distillation.temperature"),
    "temperature negative": (
        lambda r: set_path(r, "distillation.temperature", -1.0),
        "distillation.temperature",
    ),
    "temperature a string": (
        lambda r: set_path(r, "distillation.temperature", "hot"),
        "distillation.temperature",
    ),
    "alpha negative": (lambda r: set_path(r, "distillation.alpha", -0.1), "distillation.alpha"),
    "beta negative": (lambda r: set_path(r, "distillation.beta", -1), "distillation.beta"),
    "alpha and beta both 0": (lambda r: {**r, "distillation": {"alpha": 0, "beta": 0}}, "distillation"),
    "unknown distillation field": (lambda r: set_path(r, "distillation.gamma", 1), "distillation.gamma"),
    "unknown student family": (
        lambda r: set_path(r, "student.architecture.family", "resnet9000"),
        "student.architecture",
    ),
    "unknown teacher family": (
        lambda r: set_path(r, "teacher.architecture.family", "gpt"),
        "teacher.architecture",
    ),
    "student family missing": (lambda r: drop(r, "student.architecture.family"), "student.architecture"),
    "unknown architecture field": (
        lambda r: set_path(r, "student.architecture.hidden_size", 8),
        "student.architecture.hidden_size",
    ),
    "mlp field on a cnn": (
        lambda r: set_path(
            r,
            "student.architecture",
            {"family": "cnn", "input_shape": [1, 2, 2], "num_classes": 3, "hidden_sizes": [4]},
        ),
        "student.architecture.hidden_sizes",
    ),
    "cnn with 2-element input_shape": (
        lambda r: set_path(
            r, "student.architecture", {"family": "cnn", "input_shape": [32, 32], "num_classes": 3}
        ),
        "student.architecture.input_shape",
    ),
    "num_classes 1": (
        lambda r: set_path(r, "student.architecture.num_classes", 1),
        "student.architecture.num_classes",
    ),
    "input_shape with 0": (
        lambda r: set_path(r, "student.architecture.input_shape", [0]),
        "student.architecture.input_shape.0",
    ),
    "dropout 1": (lambda r: set_path(r, "student.architecture.dropout", 1.0), "student.architecture.dropout"),
    "unknown top-level field": (lambda r: {**r, "epochs": 5}, "epochs"),
    "unknown training field": (lambda r: set_path(r, "training.epoch", 5), "training.epoch"),
    "unknown teacher field": (lambda r: set_path(r, "teacher.path", "/etc/passwd"), "teacher.path"),
    "missing student": (lambda r: drop(r, "student"), "student"),
    "missing teacher file_id": (lambda r: drop(r, "teacher.file_id"), "teacher.file_id"),
    "missing dataset": (lambda r: drop(r, "dataset"), "dataset"),
    "missing train_file_id": (lambda r: drop(r, "dataset.train_file_id"), "dataset.train_file_id"),
    "missing num_classes": (
        lambda r: drop(r, "student.architecture.num_classes"),
        "student.architecture.num_classes",
    ),
    "teacher format tflite": (lambda r: set_path(r, "teacher.format", "tflite"), "teacher.format"),
    "epochs 0": (lambda r: set_path(r, "training.epochs", 0), "training.epochs"),
    "batch_size 0": (lambda r: set_path(r, "training.batch_size", 0), "training.batch_size"),
    "devices 0": (lambda r: set_path(r, "training.devices", 0), "training.devices"),
    "devices 65": (lambda r: set_path(r, "training.devices", 65), "training.devices"),
    "learning_rate 0": (lambda r: set_path(r, "training.learning_rate", 0), "training.learning_rate"),
    "learning_rate fast": (lambda r: set_path(r, "training.learning_rate", "fast"), "training.learning_rate"),
    "unknown optimizer": (lambda r: set_path(r, "training.optimizer", "lion"), "training.optimizer"),
    "name too long": (lambda r: {**r, "name": "x" * 256}, "name"),
}


@pytest.mark.parametrize("change, param", SCHEMA_ERRORS.values(), ids=SCHEMA_ERRORS.keys())
def test_schema_error_names_the_field(client, teacher_file, dataset_file, change, param):
    newest = newest_id(client, "jobs")
    request = change(job_request(teacher_file["id"], dataset_file["id"]))
    error = assert_error(client.post("/v1/jobs", json=request), 422, param, "invalid_request")
    assert param in error["message"]
    assert newest_id(client, "jobs") == newest


def test_unknown_family_message_lists_the_families(client, teacher_file, dataset_file):
    request = set_path(
        job_request(teacher_file["id"], dataset_file["id"]), "student.architecture.family", "rnn"
    )
    error = assert_error(client.post("/v1/jobs", json=request), 422, "student.architecture")
    assert "mlp" in error["message"] and "cnn" in error["message"]


def test_alpha_and_beta_zero_message_says_why(client, teacher_file, dataset_file):
    request = job_request(teacher_file["id"], dataset_file["id"], distillation={"alpha": 0, "beta": 0})
    error = assert_error(client.post("/v1/jobs", json=request), 422, "distillation")
    assert "alpha" in error["message"] and "beta" in error["message"]


# Files named by the request


@pytest.fixture
def tokenizer_file(client) -> dict:
    return upload_ok(client, TOKENIZER, "tokenizer", "tokenizer.json")


@pytest.fixture
def pt2_file(client) -> dict:
    return upload_ok(client, pt2_teacher(), "teacher", "teacher.pt2")


@pytest.fixture
def onnx_file(client) -> dict:
    return upload_ok(client, onnx_teacher(), "teacher", "teacher.onnx")


def test_unknown_teacher_file(client, dataset_file):
    request = job_request("file-doesnotexist", dataset_file["id"])
    error = assert_error(client.post("/v1/jobs", json=request), 404, "teacher.file_id", "not_found")
    assert "file-doesnotexist" in error["message"]


def test_unknown_train_file(client, teacher_file):
    request = job_request(teacher_file["id"], "file-doesnotexist")
    assert_error(client.post("/v1/jobs", json=request), 404, "dataset.train_file_id", "not_found")


def test_unknown_validation_file(client, teacher_file, dataset_file):
    request = set_path(
        job_request(teacher_file["id"], dataset_file["id"]), "dataset.validation_file_id", "file-nope"
    )
    assert_error(client.post("/v1/jobs", json=request), 404, "dataset.validation_file_id", "not_found")


def test_resuming_from_an_unknown_or_unfinished_job_is_refused(client, teacher_file, dataset_file):
    request = job_request(teacher_file["id"], dataset_file["id"]) | {"resume_from": "job-nope"}
    assert_error(client.post("/v1/jobs", json=request), 404, "resume_from", "not_found")
    queued = client.post("/v1/jobs", json=job_request(teacher_file["id"], dataset_file["id"])).json()
    response = client.post("/v1/jobs", json=request | {"resume_from": queued["id"]})
    error = assert_error(response, 422, "resume_from", "not_resumable")
    assert f"Job {queued['id']} is queued" in error["message"]


def test_deleted_file_is_unknown(client, teacher_file):
    dataset = upload_ok(client, dataset_bytes(), "dataset")
    assert client.delete(f"/v1/files/{dataset['id']}").status_code == 200
    request = job_request(teacher_file["id"], dataset["id"])
    assert_error(client.post("/v1/jobs", json=request), 404, "dataset.train_file_id", "not_found")


def test_dataset_with_wrong_purpose(client, teacher_file):
    newest = newest_id(client, "jobs")
    request = job_request(teacher_file["id"], teacher_file["id"])
    error = assert_error(
        client.post("/v1/jobs", json=request), 422, "dataset.train_file_id", "wrong_file_purpose"
    )
    assert "'teacher'" in error["message"] and "'dataset'" in error["message"]
    assert newest_id(client, "jobs") == newest


def test_validation_file_with_wrong_purpose(client, teacher_file, dataset_file, tokenizer_file):
    request = set_path(
        job_request(teacher_file["id"], dataset_file["id"]),
        "dataset.validation_file_id",
        tokenizer_file["id"],
    )
    response = client.post("/v1/jobs", json=request)
    assert_error(response, 422, "dataset.validation_file_id", "wrong_file_purpose")


def test_teacher_with_wrong_purpose(client, dataset_file):
    request = job_request(dataset_file["id"], dataset_file["id"])
    assert_error(client.post("/v1/jobs", json=request), 422, "teacher.file_id", "wrong_file_purpose")


def test_safetensors_teacher_without_architecture(client, teacher_file, dataset_file):
    request = job_request(teacher_file["id"], dataset_file["id"], teacher={"file_id": teacher_file["id"]})
    error = assert_error(
        client.post("/v1/jobs", json=request), 422, "teacher.architecture", "architecture_required"
    )
    assert "safetensors" in error["message"]


def test_format_mismatch(client, teacher_file, dataset_file):
    request = set_path(job_request(teacher_file["id"], dataset_file["id"]), "teacher.format", "pt2")
    error = assert_error(client.post("/v1/jobs", json=request), 422, "teacher.format", "format_mismatch")
    assert "safetensors" in error["message"]


def test_format_mismatch_pt2_file(client, pt2_file, dataset_file):
    request = job_request(
        pt2_file["id"],
        dataset_file["id"],
        teacher={"file_id": pt2_file["id"], "format": "safetensors", "architecture": mlp_spec()},
    )
    assert_error(client.post("/v1/jobs", json=request), 422, "teacher.format", "format_mismatch")


@pytest.mark.parametrize("program", ["pt2", "onnx"])
def test_program_teacher_with_architecture(client, request, program, dataset_file):
    file = request.getfixturevalue(f"{program}_file")
    body = job_request(file["id"], dataset_file["id"])  # carries an architecture
    error = assert_error(
        client.post("/v1/jobs", json=body), 422, "teacher.architecture", "unexpected_architecture"
    )
    assert program in error["message"]


def test_a_student_is_not_derived_from_an_onnx_teacher(client, onnx_file, dataset_file):
    body = job_request(onnx_file["id"], dataset_file["id"], teacher={"file_id": onnx_file["id"]})
    body["student"] = {"derive": {"depth": 0.5}}
    error = assert_error(client.post("/v1/jobs", json=body), 422, "student.derive", "architecture_required")
    assert "onnx teacher does not declare" in error["message"]


def test_num_classes_mismatch(client, teacher_file, dataset_file):
    request = job_request(
        teacher_file["id"],
        dataset_file["id"],
        student={"architecture": mlp_spec(num_classes=10, hidden_sizes=[4])},
    )
    response = client.post("/v1/jobs", json=request)
    error = assert_error(response, 422, "student.architecture.num_classes", "incompatible_shapes")
    assert "3" in error["message"] and "10" in error["message"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("teacher.weight", 1e-320),  # passes `> 0`, and is 0 in float32
        ("teacher.weight", 0.0001),
        ("distillation.temperature", 1e-300),  # x / T overflows
        ("distillation.final_temperature", 1e-300),
        ("distillation.search.temperatures", [4.0, 0.001]),
    ],
)
def test_weights_and_temperatures_too_small_to_compute_with_are_refused(
    client, teacher_file, dataset_file, path, value
):
    request = set_path(job_request(teacher_file["id"], dataset_file["id"]), path, value)
    param = f"{path}.1" if isinstance(value, list) else path
    error = assert_error(client.post("/v1/jobs", json=request), 422, param, "invalid_request")
    assert "greater than or equal" in error["message"]


# Bodies that are not a job request at all


def test_malformed_json(client):
    newest = newest_id(client, "jobs")
    response = client.post("/v1/jobs", content=b'{"teacher": {', headers={"Content-Type": "application/json"})
    error = assert_error(response, 422, None, "invalid_request")
    assert "not valid JSON" in error["message"]
    assert newest_id(client, "jobs") == newest


@pytest.mark.parametrize("body", [[], [1, 2], "a string", 42, None])
def test_json_that_is_not_an_object(client, body):
    error = assert_error(client.post("/v1/jobs", json=body), 422, None, "invalid_request")
    assert "JSON object" in error["message"]


def test_empty_body(client):
    assert_error(client.post("/v1/jobs"), 422, None, "invalid_request")


def test_enormous_json_body_is_413(client, teacher_file, dataset_file):
    newest = newest_id(client, "jobs")
    request = job_request(teacher_file["id"], dataset_file["id"], name="x" * (1024 * 1024 + 1))
    error = assert_error(client.post("/v1/jobs", json=request), 413, None, "payload_too_large")
    assert "larger" in error["message"]
    assert newest_id(client, "jobs") == newest


def test_enormous_chunked_json_body_is_413(client):
    def body():
        yield b'{"name": "'
        for _ in range(3):
            yield b"x" * (512 * 1024)
        yield b'"}'

    response = client.post("/v1/jobs", content=body(), headers={"Content-Type": "application/json"})
    assert_error(response, 413, None, "payload_too_large")


def test_json_just_under_the_limit_is_validated_not_refused(client):
    body = json.dumps({"padding": "x" * (1000 * 1024)}).encode()
    response = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("gates", "param"),
    [
        ([{"metric": "student.acuracy", "op": ">=", "value": 0.9}], "gates.0.metric"),
        ([{"metric": "compression", "op": ">=", "value": 2}, {"metric": "agreement", "op": "==", "value": 1}],
         "gates.1.op"),
        ([{"metric": "compression", "op": ">=", "value": "high"}], "gates.0.value"),
        ([{"metric": "int8.accuracy", "op": ">=", "value": 0.9}], "gates.0.metric"),  # without export int8
    ],
    ids=["unknown metric", "unknown operator", "not a number", "int8 without its export"],
)  # fmt: skip
def test_a_gate_it_cannot_evaluate_is_refused_naming_it(client, teacher_file, dataset_file, gates, param):
    request = job_request(teacher_file["id"], dataset_file["id"], gates=gates)
    assert_error(client.post("/v1/jobs", json=request), 422, param)


def test_gates_are_kept_in_the_request(client, teacher_file, dataset_file):
    gates = [{"metric": "int8.accuracy", "op": ">=", "value": 0.5}]
    request = job_request(teacher_file["id"], dataset_file["id"], gates=gates, export=["int8"])
    response = client.post("/v1/jobs", json=request)
    assert response.status_code == 201, response.text
    assert response.json()["request"]["gates"] == gates
