"""`Idempotency-Key` on POST: a retry with the same body gets the first response, another body a 409."""

import uuid

import pytest

from tests.service.helpers import (
    TOKENIZER,
    assert_error,
    dataset_bytes,
    job_request,
    newest_id,
    stored_objects,
    upload,
)


def new_key() -> str:
    return f"test-{uuid.uuid4()}"


def test_job_retry_with_same_key_returns_the_same_job(client, teacher_file, dataset_file):
    key = new_key()
    request = job_request(teacher_file["id"], dataset_file["id"], name="idempotent")
    first = client.post("/v1/jobs", json=request, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    newest = newest_id(client, "jobs")
    assert newest == first.json()["id"]

    again = client.post("/v1/jobs", json=request, headers={"Idempotency-Key": key})
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert newest_id(client, "jobs") == newest  # no second job


def test_job_same_key_other_body_is_409_and_replay_still_works(client, teacher_file, dataset_file):
    key = new_key()
    request = job_request(teacher_file["id"], dataset_file["id"], name="first")
    first = client.post("/v1/jobs", json=request, headers={"Idempotency-Key": key}).json()

    other = {**request, "name": "second"}
    error = assert_error(
        client.post("/v1/jobs", json=other, headers={"Idempotency-Key": key}),
        409,
        "Idempotency-Key",
        "idempotency_key_reused",
    )
    assert key in error["message"]
    assert newest_id(client, "jobs") == first["id"]

    replay = client.post("/v1/jobs", json=request, headers={"Idempotency-Key": key})
    assert replay.status_code == 201
    assert replay.json()["id"] == first["id"]


def test_job_without_key_creates_a_new_job_each_time(client, teacher_file, dataset_file):
    request = job_request(teacher_file["id"], dataset_file["id"])
    first = client.post("/v1/jobs", json=request).json()
    second = client.post("/v1/jobs", json=request).json()
    assert first["id"] != second["id"]


def test_job_different_keys_create_different_jobs(client, teacher_file, dataset_file):
    request = job_request(teacher_file["id"], dataset_file["id"])
    first = client.post("/v1/jobs", json=request, headers={"Idempotency-Key": new_key()}).json()
    second = client.post("/v1/jobs", json=request, headers={"Idempotency-Key": new_key()}).json()
    assert first["id"] != second["id"]


def test_job_rejected_request_does_not_burn_the_key(client, teacher_file, dataset_file):
    key = new_key()
    bad = job_request(teacher_file["id"], dataset_file["id"], distillation={"temperature": 0})
    assert client.post("/v1/jobs", json=bad, headers={"Idempotency-Key": key}).status_code == 422
    good = job_request(teacher_file["id"], dataset_file["id"])
    assert client.post("/v1/jobs", json=good, headers={"Idempotency-Key": key}).status_code == 201


def test_file_retry_with_same_key_returns_the_same_file(client, storage_root):
    key = new_key()
    content = dataset_bytes(n=12)
    first = upload(client, content, "dataset", "train.npz", **{"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    newest, objects = newest_id(client, "files"), stored_objects(storage_root)

    again = upload(client, content, "dataset", "train.npz", **{"Idempotency-Key": key})
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert newest_id(client, "files") == newest  # no second file
    assert stored_objects(storage_root) == objects  # and no second copy of the bytes
    assert client.get(f"/v1/files/{first.json()['id']}/content").content == content


def test_file_same_key_other_body_is_409_and_replay_still_works(client, storage_root):
    key = new_key()
    first = upload(client, TOKENIZER, "tokenizer", "tokenizer.json", **{"Idempotency-Key": key}).json()
    newest, objects = newest_id(client, "files"), stored_objects(storage_root)

    for content, purpose, filename in [
        (TOKENIZER + b" ", "tokenizer", "tokenizer.json"),  # other bytes
        (TOKENIZER, "tokenizer", "other.json"),  # other name
        (dataset_bytes(), "dataset", "tokenizer.json"),  # other purpose
    ]:
        response = upload(client, content, purpose, filename, **{"Idempotency-Key": key})
        assert_error(response, 409, "Idempotency-Key", "idempotency_key_reused")
    assert newest_id(client, "files") == newest
    assert stored_objects(storage_root) == objects

    replay = upload(client, TOKENIZER, "tokenizer", "tokenizer.json", **{"Idempotency-Key": key})
    assert replay.status_code == 201
    assert replay.json()["id"] == first["id"]


def test_same_key_on_files_and_jobs_is_independent(client, teacher_file, dataset_file):
    key = new_key()
    file = upload(client, TOKENIZER, "tokenizer", "t.json", **{"Idempotency-Key": key})
    assert file.status_code == 201
    job = client.post(
        "/v1/jobs", json=job_request(teacher_file["id"], dataset_file["id"]), headers={"Idempotency-Key": key}
    )
    assert job.status_code == 201
    assert job.json()["id"].startswith("job-")


def test_overlong_key_is_422(client, teacher_file, dataset_file):
    newest = newest_id(client, "jobs")
    request = job_request(teacher_file["id"], dataset_file["id"])
    response = client.post("/v1/jobs", json=request, headers={"Idempotency-Key": "k" * 256})
    assert response.status_code == 422
    assert response.json()["error"]["param"].lower() == "idempotency-key"
    assert newest_id(client, "jobs") == newest


@pytest.mark.parametrize(
    "key",
    ["", " ", "tab\tkey", "x" * 256, "clé".encode("latin-1")],
    ids=["empty", "space", "tab", "long", "accent"],
)
@pytest.mark.parametrize("route", ["jobs", "files"])
def test_a_key_that_is_not_1_to_255_visible_characters_is_refused(
    client, teacher_file, dataset_file, route, key
):
    """An empty key would otherwise be one key shared by every request of the tenant for 24 h."""
    newest = newest_id(client, route)
    if route == "jobs":
        response = client.post(
            "/v1/jobs",
            json=job_request(teacher_file["id"], dataset_file["id"]),
            headers={"Idempotency-Key": key},
        )
    else:
        response = upload(client, dataset_bytes(), "dataset", **{"Idempotency-Key": key})
    error = assert_error(response, 422, "Idempotency-Key", "invalid_request")
    assert "1 to 255" in error["message"]
    assert newest_id(client, route) == newest
