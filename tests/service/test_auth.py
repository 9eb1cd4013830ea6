"""DISTILL_AUTH=on: every /v1 endpoint wants a valid API key (401 otherwise), and a tenant reaches only its
own files, jobs, events, metrics and artifacts: another tenant's id answers exactly as an unknown id (404).
Also the pt2 policy: pt2 teachers are refused while keys are on, unless the operator allows them; onnx
and hf teachers, which unpickle nothing, are not."""

import pytest
from sqlalchemy import select

from core.models import ApiKey
from service.main import create_app
from tests.hf_archives import hand_made, zip_archive
from tests.service.helpers import (
    TOKENIZER,
    assert_error,
    dataset_bytes,
    job_request,
    newest_id,
    onnx_teacher,
    pt2_teacher,
    safetensors_teacher,
    stored_objects,
    upload,
    upload_ok,
)
from tests.service.tenants import (
    client_for,
    database,
    finish_job,
    make_settings,
    new_key,
    revoke,
    tenant_clients,
)

UNKNOWN = {"file_id": "file-" + "0" * 24, "job_id": "job-" + "0" * 24, "name": "student.json"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return make_settings(tmp_path_factory.mktemp("auth"), auth="on")


@pytest.fixture(scope="module")
def app(settings):
    return create_app(settings)


@pytest.fixture(scope="module")
def alice_key(settings) -> str:
    return new_key(settings, "alice")


@pytest.fixture(scope="module")
def alice(app, alice_key):
    with client_for(app, alice_key) as client:
        yield client


@pytest.fixture(scope="module")
def bob(app, settings):
    with client_for(app, new_key(settings, "bob")) as client:
        yield client


@pytest.fixture(scope="module")
def anonymous(app):
    with client_for(app) as client:
        yield client


@pytest.fixture(scope="module")
def alices(alice, settings) -> dict:
    """Alice's files, a queued job, and a succeeded job with a metric and an artifact."""
    teacher = upload_ok(alice, safetensors_teacher(), "teacher", "teacher.safetensors")
    dataset = upload_ok(alice, dataset_bytes(), "dataset", "train.npz")
    tokenizer = upload_ok(alice, TOKENIZER, "tokenizer", "tokenizer.json")
    jobs = [alice.post("/v1/jobs", json=job_request(teacher["id"], dataset["id"])) for _ in range(2)]
    assert all(job.status_code == 201 for job in jobs), jobs[0].text
    queued, done = (job.json() for job in jobs)
    finish_job(settings, done["id"])
    return {"teacher": teacher, "dataset": dataset, "tokenizer": tokenizer, "queued": queued, "done": done}


@pytest.fixture(scope="module")
def bobs(bob) -> dict:
    return {
        "teacher": upload_ok(bob, safetensors_teacher(), "teacher", "teacher.safetensors"),
        "dataset": upload_ok(bob, dataset_bytes(), "dataset", "train.npz"),
    }


def v1_operations(app) -> list[tuple[str, str]]:
    """Every operation of the API under /v1, from its OpenAPI document: new endpoints are walked too."""
    return [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/v1/")
        for method in operations
    ]


# 401


def test_every_v1_operation_is_walked(app):
    assert len(v1_operations(app)) >= 13


def wrong_secret(key: str) -> str:
    return key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")


BAD_CREDENTIALS = {
    "no header": lambda key, revoked: None,
    "empty bearer": lambda key, revoked: "Bearer ",
    "basic auth": lambda key, revoked: "Basic YWxpY2U6c2VjcmV0",
    "not a key": lambda key, revoked: "Bearer not-a-key",
    "bare key without Bearer": lambda key, revoked: key,
    "unknown key id": lambda key, revoked: "Bearer dk_key-" + "0" * 24 + "_" + key.split("_", 2)[2],
    "wrong secret": lambda key, revoked: "Bearer " + wrong_secret(key),
    "revoked key": lambda key, revoked: "Bearer " + revoked,
}


@pytest.fixture(scope="module")
def revoked_key(settings) -> str:
    key = new_key(settings, "alice")
    revoke(settings, key)
    return key


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS)
def test_every_v1_endpoint_refuses_requests_without_a_valid_key(
    app, anonymous, alice_key, revoked_key, credentials
):
    header = BAD_CREDENTIALS[credentials](alice_key, revoked_key)
    headers = {"Authorization": header} if header is not None else {}
    for method, path in v1_operations(app):
        response = anonymous.request(method, path.format(**UNKNOWN), headers=headers)
        assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)
        if method == "HEAD":  # the status and headers only
            assert response.status_code == 401, path
            continue
        error = assert_error(response, 401, None, "unauthorized")
        assert "api key" in error["message"].lower(), error
    if credentials == "revoked key":
        assert "revoked" in error["message"]


def test_401_comes_before_validating_the_request(anonymous):
    assert_error(anonymous.post("/v1/jobs", json={"teacher": "nonsense"}), 401, None, "unauthorized")
    response = upload(anonymous, b"not a dataset", "dataset")
    assert_error(response, 401, None, "unauthorized")


def test_health_and_docs_need_no_key(anonymous):
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/readyz").status_code in (200, 503)
    document = anonymous.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["HTTPBearer"]["description"],
    }
    paths = document["paths"]
    operations = [(path, operation) for path, item in paths.items() for operation in item.values()]
    for path, operation in operations:  # every /v1 operation needs the key (`KeyCheck`), nothing else does
        assert operation.get("security") == ([{"HTTPBearer": []}] if path.startswith("/v1/") else None), path
    assert any(path == "/v1/jobs/{job_id}" for path, _ in operations)


def test_a_valid_key_is_accepted_and_its_use_noted(settings, alice, alice_key):
    assert alice.get("/v1/files").status_code == 200
    assert alice.get("/v1/jobs", headers={"Authorization": f"bearer {alice_key}"}).status_code == 200
    with database(settings) as session:
        row = session.scalar(select(ApiKey).where(ApiKey.id == alice_key.split("_")[1]))
        assert row.tenant_id == "alice" and row.last_used_at is not None
        assert alice_key.split("_", 2)[2] not in (row.secret_sha256, row.id)  # only a hash is stored


def test_a_revoked_key_stops_working_at_once(app, settings):
    key = new_key(settings, "carol")
    with client_for(app, key) as carol:
        assert carol.get("/v1/files").status_code == 200
        revoke(settings, key)
        error = assert_error(carol.get("/v1/files"), 401, None, "unauthorized")
        assert key.split("_")[1] in error["message"] and "revoked" in error["message"]


# Tenancy: another tenant's ids are 404, exactly as unknown ids


def test_another_tenants_ids_are_404_on_every_endpoint(app, alice, bob, alices):
    walked = set()
    for method, path in v1_operations(app):
        if "{" not in path:
            continue
        for job in (alices["queued"], alices["done"]):
            theirs = {"file_id": alices["teacher"]["id"], "job_id": job["id"], "name": "student.json"}
            response = bob.request(method, path.format(**theirs))
            unknown = bob.request(method, path.format(**UNKNOWN))
            assert unknown.status_code == response.status_code == 404, (method, path, unknown.text)
            if method != "HEAD":  # which has no body
                assert_error(response, 404, None, "not_found")
            body = response.text
            for field in ("file_id", "job_id"):
                body = body.replace(theirs[field], UNKNOWN[field])
            assert body == unknown.text, (method, path)  # indistinguishable from an id that does not exist
            walked.add((method, path))
    assert len(walked) >= 9, walked  # (a new kind of id in a path fails `format` above: add it there)

    # Nothing happened to Alice's resources, which she still reaches.
    for file in ("teacher", "dataset", "tokenizer"):
        assert alice.get(f"/v1/files/{alices[file]['id']}").status_code == 200
    assert alice.get(f"/v1/jobs/{alices['queued']['id']}").json()["status"] == "queued"
    done = alices["done"]["id"]
    assert alice.get(f"/v1/jobs/{done}/metrics").json()["data"][0]["name"] == "loss"
    assert [a["name"] for a in alice.get(f"/v1/jobs/{done}/artifacts").json()["data"]] == ["student.json"]
    assert alice.get(f"/v1/jobs/{done}/artifacts/student.json").content == b'{"family": "mlp"}'
    content = alice.get(f"/v1/files/{alices['dataset']['id']}/content")
    assert content.status_code == 200 and content.content == dataset_bytes()


def test_another_tenants_event_stream_is_404(alice, bob, alices):
    done = alices["done"]["id"]
    stream = {"Accept": "text/event-stream"}
    assert_error(bob.get(f"/v1/jobs/{done}/events", headers=stream), 404, None, "not_found")
    own = alice.get(f"/v1/jobs/{done}/events", headers=stream)
    assert own.status_code == 200 and "event: end" in own.text and "queued" in own.text


def field(path: str, value: str, request: dict) -> dict:
    section, name = path.split(".")
    request[section] = {**request.get(section, {}), name: value}
    return request


@pytest.mark.parametrize(
    "param", ["teacher.file_id", "dataset.train_file_id", "dataset.validation_file_id", "teachers.1.file_id"]
)
def test_a_job_cannot_use_another_tenants_file(bob, alices, bobs, param):
    request = job_request(bobs["teacher"]["id"], bobs["dataset"]["id"])
    kind = "teacher" if "teacher" in param else "dataset"
    if param == "teachers.1.file_id":
        teacher = request.pop("teacher")
        request["teachers"] = [teacher, {**teacher, "file_id": alices["teacher"]["id"]}]
    else:
        request = field(param, alices[kind]["id"], request)
    error = assert_error(bob.post("/v1/jobs", json=request), 404, param, "not_found")
    assert alices[kind]["id"] in error["message"]


def test_a_job_cannot_use_another_tenants_tokenizer(bob, alices, bobs):
    request = job_request(bobs["teacher"]["id"], bobs["dataset"]["id"])
    request["dataset"]["tokenizer_file_id"] = alices["tokenizer"]["id"]
    assert_error(bob.post("/v1/jobs", json=request), 404, "dataset.tokenizer_file_id", "not_found")


def test_lists_show_only_the_tenants_own(alice, bob, alices, bobs):
    bob_job = bob.post("/v1/jobs", json=job_request(bobs["teacher"]["id"], bobs["dataset"]["id"])).json()
    for collection in ("files", "jobs"):
        alice_ids = {
            item["id"] for item in alice.get(f"/v1/{collection}", params={"limit": 100}).json()["data"]
        }
        bob_ids = {item["id"] for item in bob.get(f"/v1/{collection}", params={"limit": 100}).json()["data"]}
        assert alice_ids and bob_ids and not alice_ids & bob_ids
    assert alices["done"]["id"] in {job["id"] for job in alice.get("/v1/jobs").json()["data"]}
    assert bob_job["id"] not in {job["id"] for job in alice.get("/v1/jobs").json()["data"]}
    # Another tenant's id as a cursor is no item of this list, as an unknown id.
    assert_error(
        bob.get("/v1/files", params={"after": alices["teacher"]["id"]}), 422, "after", "invalid_cursor"
    )
    assert_error(
        bob.get("/v1/jobs", params={"after": alices["queued"]["id"]}), 422, "after", "invalid_cursor"
    )


def test_idempotency_keys_are_per_tenant(alice, bob, bobs):
    headers = {"Idempotency-Key": "shared-key-1"}
    content = dataset_bytes(n=9)
    first = upload(alice, content, "dataset", "same.npz", **headers)
    second = upload(bob, content, "dataset", "same.npz", **headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    assert "idempotent-replayed" not in second.headers
    again = upload(alice, content, "dataset", "same.npz", **headers)
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"

    headers = {"Idempotency-Key": "shared-key-2"}
    alices_job = alice.post(
        "/v1/jobs", json=job_request(bobs["teacher"]["id"], bobs["dataset"]["id"]), headers=headers
    )
    assert alices_job.status_code == 404  # Bob's files; nothing remembered for a refused request
    bobs_job = bob.post(
        "/v1/jobs", json=job_request(bobs["teacher"]["id"], bobs["dataset"]["id"]), headers=headers
    )
    assert bobs_job.status_code == 201 and "idempotent-replayed" not in bobs_job.headers


def test_uploads_are_stored_under_the_tenant(settings, bob):
    before = stored_objects(settings.storage_root)
    file = upload_ok(bob, dataset_bytes(n=5), "dataset")
    (new,) = stored_objects(settings.storage_root) - before
    assert new.relative_to(settings.storage_root).parts[:2] == ("files", "bob")
    assert new.name == file["id"]


# pt2 policy


def test_pt2_upload_is_refused_while_keys_are_on(settings, alice):
    newest, objects = newest_id(alice, "files"), stored_objects(settings.storage_root)
    error = assert_error(
        upload(alice, pt2_teacher(), "teacher", "teacher.pt2"), 422, "file", "pt2_not_allowed"
    )
    assert "DISTILL_ALLOW_PT2=on" in error["message"] and "safetensors" in error["message"]
    assert newest_id(alice, "files") == newest
    assert stored_objects(settings.storage_root) == objects


def test_onnx_teachers_are_allowed_while_keys_are_on(alice):
    teacher = upload_ok(alice, onnx_teacher(), "teacher", "teacher.onnx")
    dataset = upload_ok(alice, dataset_bytes(), "dataset")
    response = alice.post(
        "/v1/jobs", json=job_request(teacher["id"], dataset["id"], teacher={"file_id": teacher["id"]})
    )
    assert response.status_code == 201, response.text
    assert response.json()["request"]["teacher"]["format"] == "onnx"


def test_hf_teachers_are_allowed_while_keys_are_on(alice):
    """An archived save_pretrained folder: safetensors weights only, nothing to unpickle."""
    teacher = upload_ok(alice, zip_archive(hand_made()), "teacher", "model.zip")
    assert teacher["format"] == "hf" and teacher["model"]["model_type"] == "bert"


def test_pt2_is_allowed_when_the_operator_turns_it_on(tmp_path, alice_key):
    settings = make_settings(tmp_path, auth="on", allow_pt2="on")
    with tenant_clients(settings, "dave") as (dave,):
        teacher = upload_ok(dave, pt2_teacher(), "teacher", "teacher.pt2")
        dataset = upload_ok(dave, dataset_bytes(), "dataset")
        request = job_request(teacher["id"], dataset["id"], teacher={"file_id": teacher["id"]})
        response = dave.post("/v1/jobs", json=request)
        assert response.status_code == 201, response.text
        assert response.json()["request"]["teacher"]["format"] == "pt2"


def test_a_pt2_file_from_before_is_refused_at_job_creation(tmp_path):
    """A pt2 file uploaded while they were allowed, then the operator turned keys on: no job reads it."""
    allowed = make_settings(tmp_path, auth="on", allow_pt2="on")
    key = new_key(allowed, "erin")
    with client_for(create_app(allowed), key) as before:
        pt2 = upload_ok(before, pt2_teacher(), "teacher", "teacher.pt2")
        safetensors = upload_ok(before, safetensors_teacher(), "teacher", "teacher.safetensors")
        dataset = upload_ok(before, dataset_bytes(), "dataset")
    refused = allowed.model_copy(update={"allow_pt2": "auto"})
    with client_for(create_app(refused), key) as after:
        request = job_request(pt2["id"], dataset["id"], teacher={"file_id": pt2["id"]})
        error = assert_error(after.post("/v1/jobs", json=request), 422, "teacher.format", "pt2_not_allowed")
        assert "unpickle" in error["message"]

        request = job_request(safetensors["id"], dataset["id"])
        request["teachers"] = [request.pop("teacher"), {"file_id": pt2["id"], "format": "pt2"}]
        assert_error(after.post("/v1/jobs", json=request), 422, "teachers.1.format", "pt2_not_allowed")


def test_pt2_can_be_turned_off_without_auth(tmp_path):
    settings = make_settings(tmp_path, allow_pt2="off")
    with client_for(create_app(settings)) as client:
        error = assert_error(
            upload(client, pt2_teacher(), "teacher", "t.pt2"), 422, "file", "pt2_not_allowed"
        )
        assert "DISTILL_ALLOW_PT2=off" in error["message"]
        assert upload(client, safetensors_teacher(), "teacher", "t.safetensors").status_code == 201


def test_auth_off_is_the_default_tenant_with_pt2(tmp_path):
    settings = make_settings(tmp_path)
    assert settings.auth == "off" and settings.pt2_allowed
    with client_for(create_app(settings), "dk_key-0_ignored") as client:  # a key is ignored, not refused
        teacher = upload_ok(client, pt2_teacher(), "teacher", "t.pt2")
        assert client.get(f"/v1/files/{teacher['id']}").status_code == 200
    assert (settings.storage_root / "files" / "default" / teacher["id"]).exists()
