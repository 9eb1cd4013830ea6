"""Fixtures shared by every test: a private DISTILL_HOME, real servers, real processes.

Settings are read once per process, so the environment is set here before any service module loads.
"""

import os
import secrets
import tempfile
from pathlib import Path

_HOME = Path(tempfile.mkdtemp(prefix="distill-test-"))
os.environ["DISTILL_HOME"] = str(_HOME)
for _name in ("DISTILL_DATABASE_URL", "DISTILL_BROKER_URL", "DISTILL_STORAGE_URL", "DISTILL_AUTH"):
    os.environ.pop(_name, None)

import pytest  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from tests.servers import postgres_database, rabbitmq_queue, redis_url, s3_bucket, s3_server  # noqa: E402
from tests.service.helpers import (  # noqa: E402
    dataset_bytes,
    job_request,
    newest_id,
    safetensors_teacher,
    stored_objects,
    upload_ok,
)
from tests.stack import ServiceStack  # noqa: E402


@pytest.fixture(scope="session")
def home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def client(home) -> TestClient:
    """The API in-process over the migrated embedded database (jobs queue up; no worker consumes them)."""
    from core.config import get_settings
    from core.migrate import upgrade
    from service.main import create_app

    upgrade(get_settings().resolved_database_url)
    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def resources(client):
    """What the `client`'s app serves: its settings, database, storage and queue."""
    return client.app.state.resources


@pytest.fixture
def storage_root(resources) -> Path:
    return resources.settings.storage_root


@pytest.fixture
def nothing_stored(client, storage_root):
    """Asserts, after the test, that no file row and no stored object (nor a partial one) was added."""
    newest, objects = newest_id(client, "files"), stored_objects(storage_root)
    yield
    assert newest_id(client, "files") == newest
    assert stored_objects(storage_root) == objects


@pytest.fixture
def dataset_file(client) -> dict:
    return upload_ok(client, dataset_bytes(), "dataset", "train.npz")


@pytest.fixture
def teacher_file(client) -> dict:
    return upload_ok(client, safetensors_teacher(), "teacher", "teacher.safetensors")


@pytest.fixture
def queued_job(client, teacher_file, dataset_file) -> dict:
    response = client.post("/v1/jobs", json=job_request(teacher_file["id"], dataset_file["id"]))
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="session")
def postgres_url():
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_broker_url():
    with redis_url() as url:
        yield url


@pytest.fixture(scope="session")
def rabbitmq():
    with rabbitmq_queue() as url_and_queue:
        yield url_and_queue


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server, named by the AWS_* environment variables while the session runs."""
    with s3_server() as url:
        yield url


@pytest.fixture(scope="session")
def bucket(s3_endpoint) -> str:
    """This run's bucket (deleted afterwards); each test keeps its objects under a prefix of its own."""
    with s3_bucket() as name:
        yield name


@pytest.fixture
def s3_url(bucket) -> str:
    """`s3://bucket/prefix`: a prefix of this test's own in this run's bucket."""
    return f"s3://{bucket}/test-{secrets.token_hex(4)}"


@pytest.fixture(scope="module", params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def storage_client(request, client) -> TestClient:
    """The API on each storage: `client` (a local folder), then an app on this run's bucket over the same
    database."""
    if request.param == "local":
        yield client
        return
    from core.config import Settings
    from service.main import create_app

    settings = Settings(storage_url=f"s3://{request.getfixturevalue('bucket')}/api-{secrets.token_hex(4)}")
    with TestClient(create_app(settings)) as s3_client:
        yield s3_client


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> ServiceStack:
    """A real API process and a real Celery worker process on SQLite + the filesystem broker."""
    with ServiceStack(tmp_path_factory.mktemp("stack")) as running:
        yield running
