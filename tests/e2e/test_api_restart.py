"""An API restart loses nothing: every state lives in the database and the storage."""

import pytest

from tests.e2e.conftest import job_request

pytestmark = pytest.mark.e2e


def test_idempotency_files_jobs_and_artifacts_survive_an_api_restart(stack, task):
    teacher = stack.client.upload(task.teacher, "teacher")["id"]
    train = stack.client.upload(task.train, "dataset")["id"]
    request = job_request(teacher, train)
    first = stack.client.post("/v1/jobs", json=request, headers={"Idempotency-Key": "restart-1"}).json()
    done = stack.client.wait_for_job(first["id"])

    stack.restart_api()

    replay = stack.client.post("/v1/jobs", json=request, headers={"Idempotency-Key": "restart-1"})
    assert replay.status_code == 201 and replay.json()["id"] == first["id"]
    changed = stack.client.post(
        "/v1/jobs", json={**request, "name": "other"}, headers={"Idempotency-Key": "restart-1"}
    )
    assert changed.status_code == 409
    assert stack.client.get(f"/v1/jobs/{first['id']}").json() == done
    assert stack.client.get(f"/v1/files/{teacher}").status_code == 200
    artifact = stack.client.get(f"/v1/jobs/{first['id']}/artifacts/student.pt2")
    sha256 = next(a["sha256"] for a in done["artifacts"] if a["name"] == "student.pt2")
    assert artifact.status_code == 200 and artifact.headers["etag"] == f'"{sha256}"'
