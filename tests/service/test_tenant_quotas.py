"""Per-tenant quotas: unfinished jobs at once (429 `too_many_jobs`) and stored bytes (413
`storage_quota_exceeded`), each refusing with nothing stored, and each tenant's own."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select, update

from core.config import Settings
from core.models import File, Job
from service.routes import files as file_routes
from tests.service.helpers import (
    assert_error,
    dataset_bytes,
    job_request,
    newest_id,
    safetensors_teacher,
    stored_objects,
    upload,
    upload_ok,
)
from tests.service.tenants import database, make_settings, tenant_clients


def test_unlimited_unless_set():
    settings = Settings()
    assert settings.max_concurrent_jobs is None and settings.max_stored_bytes is None
    assert settings.allow_pt2 == "auto"


# Unfinished jobs at once


@pytest.fixture
def two_job_tenants(tmp_path):
    settings = make_settings(tmp_path, auth="on", max_concurrent_jobs=2)
    with tenant_clients(settings, "alice", "bob") as clients:
        yield clients


def submit(client, name: str | None = None, **headers):
    teacher = upload_ok(client, safetensors_teacher(), "teacher")
    dataset = upload_ok(client, dataset_bytes(), "dataset")
    return client.post("/v1/jobs", json=job_request(teacher["id"], dataset["id"], name=name), headers=headers)


def test_too_many_unfinished_jobs_is_429_with_nothing_created(two_job_tenants):
    alice, bob = two_job_tenants
    first, second = submit(alice), submit(alice)
    assert first.status_code == second.status_code == 201
    newest = newest_id(alice, "jobs")

    error = assert_error(submit(alice), 429, None, "too_many_jobs")
    assert "2" in error["message"] and "cancel" in error["message"]
    assert newest_id(alice, "jobs") == newest
    assert len(alice.get("/v1/jobs").json()["data"]) == 2

    assert submit(bob).status_code == 201  # the limit is per tenant

    cancelled = alice.post(f"/v1/jobs/{first.json()['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert submit(alice).status_code == 201  # a finished job frees its slot


def test_validating_running_and_cancelling_jobs_count_too(tmp_path):
    settings = make_settings(tmp_path, auth="on", max_concurrent_jobs=1)
    with tenant_clients(settings, "alice") as (alice,):
        job = submit(alice).json()
        for status in ("validating", "running", "cancelling"):
            with database(settings) as session:
                session.execute(update(Job).where(Job.id == job["id"]).values(status=status))
            assert_error(submit(alice), 429, None, "too_many_jobs")
        for status in ("succeeded", "failed", "cancelled"):
            with database(settings) as session:
                session.execute(update(Job).where(Job.id == job["id"]).values(status=status))
            assert submit(alice).status_code == 201
            with database(settings) as session:  # back to one unfinished job: the new one, finished
                session.execute(update(Job).where(Job.id != job["id"]).values(status="succeeded"))


def test_an_idempotent_retry_at_the_limit_replays(two_job_tenants):
    alice, _ = two_job_tenants
    teacher = upload_ok(alice, safetensors_teacher(), "teacher")
    dataset = upload_ok(alice, dataset_bytes(), "dataset")
    request = job_request(teacher["id"], dataset["id"])
    first = alice.post("/v1/jobs", json=request, headers={"Idempotency-Key": "retry-me"})
    assert submit(alice).status_code == 201  # now at the limit
    again = alice.post("/v1/jobs", json=request, headers={"Idempotency-Key": "retry-me"})
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]


# Stored bytes


QUOTA = 3000


@pytest.fixture
def quota_settings(tmp_path) -> Settings:
    return make_settings(tmp_path, auth="on", max_stored_bytes=QUOTA)


@pytest.fixture
def quota_tenants(quota_settings):
    with tenant_clients(quota_settings, "alice", "bob") as clients:
        yield clients


def content_of(size: int) -> bytes:
    """A valid dataset of about `size` bytes."""
    content = dataset_bytes(n=max(1, (size - 490) // 24), features=4)
    assert abs(len(content) - size) < 50, len(content)
    return content


def test_upload_past_the_quota_is_413_with_nothing_stored(quota_settings, quota_tenants):
    alice, bob = quota_tenants
    kept = upload_ok(alice, content_of(2000), "dataset")
    newest, objects = newest_id(alice, "files"), stored_objects(quota_settings.storage_root)

    error = assert_error(upload(alice, content_of(1500), "dataset"), 413, "file", "storage_quota_exceeded")
    assert str(QUOTA) in error["message"] and str(kept["bytes"]) in error["message"]
    assert "DELETE" in error["message"]
    assert newest_id(alice, "files") == newest
    assert stored_objects(quota_settings.storage_root) == objects

    assert upload(bob, content_of(1500), "dataset").status_code == 201  # the quota is per tenant

    assert alice.delete(f"/v1/files/{kept['id']}").status_code == 200
    assert upload(alice, content_of(1500), "dataset").status_code == 201  # deleting frees room


def test_a_file_bigger_than_the_whole_quota_is_413(quota_tenants):
    alice, _ = quota_tenants
    assert_error(upload(alice, content_of(QUOTA + 500), "dataset"), 413, "file", "storage_quota_exceeded")


def test_an_idempotent_upload_retry_at_the_quota_replays(quota_tenants):
    alice, _ = quota_tenants
    content = content_of(2000)
    first = upload(alice, content, "dataset", "a.npz", **{"Idempotency-Key": "upload-once"})
    again = upload(alice, content, "dataset", "a.npz", **{"Idempotency-Key": "upload-once"})
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]


def test_concurrent_uploads_cannot_together_pass_the_quota(quota_settings, quota_tenants, monkeypatch):
    """Another upload of the tenant lands while this one streams: the check after inserting refuses it."""
    alice, _ = quota_tenants
    receive = file_routes._receive_upload

    async def receive_while_another_lands(request, storage, key, limit, room):
        upload = await receive(request, storage, key, limit, room)
        with database(quota_settings) as session:
            session.add(
                File(
                    tenant_id="alice", purpose="dataset", filename="other.npz", format="npz", bytes=2000,
                    sha256="0" * 64, storage_key="files/alice/other",
                )
            )  # fmt: skip
        return upload

    monkeypatch.setattr(file_routes, "_receive_upload", receive_while_another_lands)
    objects = stored_objects(quota_settings.storage_root)
    assert_error(upload(alice, content_of(1500), "dataset"), 413, "file", "storage_quota_exceeded")
    assert stored_objects(quota_settings.storage_root) == objects
    with database(quota_settings) as session:
        assert session.scalars(select(File.filename)).all() == ["other.npz"]


def test_an_upload_stops_at_the_room_left(quota_settings, quota_tenants):
    """The file's size is not known before its bytes have streamed in (a chunked body says nothing of it):
    storing stops at the room left and keeps nothing."""
    alice, _ = quota_tenants
    kept = upload_ok(alice, content_of(2000), "dataset")
    objects = stored_objects(quota_settings.storage_root)
    head = (
        b'--b0undary\r\nContent-Disposition: form-data; name="purpose"\r\n\r\ndataset\r\n'
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="x.npz"\r\n\r\n'
    )

    def body():
        yield head
        for _ in range(5):
            yield bytes(1000)
        yield b"\r\n--b0undary--\r\n"

    response = alice.post(
        "/v1/files", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b0undary"}
    )
    error = assert_error(response, 413, "file", "storage_quota_exceeded")
    assert str(QUOTA) in error["message"] and str(kept["bytes"]) in error["message"]
    assert stored_objects(quota_settings.storage_root) == objects


# Concurrent requests, on both databases


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield None
        return
    from tests.servers import postgres_database

    with postgres_database() as url:
        yield url


def test_concurrent_requests_cannot_together_pass_the_limits(tmp_path, database_url):
    limit, racers = 2, 8
    teacher_bytes, dataset_bytes_, content = safetensors_teacher(), dataset_bytes(), content_of(1500)
    quota = len(teacher_bytes) + len(dataset_bytes_) + 2 * len(content) + len(content) // 2  # room for 2
    settings = make_settings(
        tmp_path, database_url=database_url, auth="on", max_concurrent_jobs=limit, max_stored_bytes=quota
    )
    with tenant_clients(settings, "alice") as (alice,):
        teacher = upload_ok(alice, teacher_bytes, "teacher")
        dataset = upload_ok(alice, dataset_bytes_, "dataset")
        request = job_request(teacher["id"], dataset["id"])
        with ThreadPoolExecutor(racers) as pool:
            jobs = list(pool.map(lambda _: alice.post("/v1/jobs", json=request).status_code, range(racers)))
            uploads = list(pool.map(lambda _: upload(alice, content, "dataset").status_code, range(racers)))
    assert sorted(jobs) == [201] * limit + [429] * (racers - limit)
    assert sorted(uploads) == [201] * 2 + [413] * (racers - 2)
    with database(settings) as session:
        assert len(session.scalars(select(Job)).all()) == limit
        assert sum(session.scalars(select(File.bytes)).all()) <= quota
