"""The job and file reads on PostgreSQL: on the event loop and on the threads they answer the same bytes,
and a read on a connection the server dropped is answered on a new one."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.main import create_app
from tests.service.helpers import dataset_bytes, job_request, safetensors_teacher, upload_ok
from tests.service.tenants import make_settings

pytestmark = pytest.mark.postgres

READS = ("/v1/jobs/{id}", "/v1/jobs?limit=20", "/v1/files?limit=100", "/v1/files/{file}")


def submitted_paths(client: TestClient) -> list[str]:
    """The reads of a job submitted here, and of its files."""
    teacher = upload_ok(client, safetensors_teacher(), "teacher")
    dataset = upload_ok(client, dataset_bytes(), "dataset")
    job = client.post("/v1/jobs", json=job_request(teacher["id"], dataset["id"])).json()
    return [path.format(id=job["id"], file=teacher["id"]) for path in READS]


def test_reads_answer_the_same_on_the_loop_and_on_the_threads(tmp_path, postgres_url):
    settings = make_settings(tmp_path, database_url=postgres_url)
    with TestClient(create_app(settings)) as client:
        assert client.app.state.resources.database.reads_on_loop
        paths = submitted_paths(client)
        on_the_loop = [client.get(path) for path in paths]
    assert [response.status_code for response in on_the_loop] == [200] * len(READS)
    with TestClient(create_app(settings.model_copy(update={"reads_on_loop": "off"}))) as client:
        assert not client.app.state.resources.database.reads_on_loop
        assert [client.get(path).content for path in paths] == [response.content for response in on_the_loop]


def test_a_read_on_a_dropped_connection_is_answered_on_a_new_one(tmp_path, postgres_url):
    settings = make_settings(tmp_path, database_url=postgres_url)
    with TestClient(create_app(settings)) as client:
        paths = submitted_paths(client)
        assert [client.get(path).status_code for path in paths] == [200] * len(READS)
        database = client.app.state.resources.database
        with database.engine.connect() as connection:  # drops every other connection to this database
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        assert [client.get(path).status_code for path in paths] == [200] * len(READS)
