"""Fresh resources for each API test (the database is shared by the whole session)."""

from pathlib import Path

import pytest

from tests.api.helpers import dataset_bytes, job_request, safetensors_teacher, upload_ok


@pytest.fixture
def storage_root(client) -> Path:
    from service.config import get_settings

    return get_settings().storage_root


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
