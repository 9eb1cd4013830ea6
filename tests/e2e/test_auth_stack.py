"""Keys from the real CLI, honoured by the real API process: `DISTILL_AUTH=on`, two tenants, a real job (of
an ONNX teacher, which unpickles nothing and so runs where keys are on, a layer read by a feature pair)."""

import socket

import httpx
import onnx
import pytest

from tests.e2e.conftest import job_request
from tests.service.helpers import pt2_teacher
from tests.stack import ServiceStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with ServiceStack(tmp_path_factory.mktemp("auth-stack"), auth="on", max_concurrent_jobs="1") as running:
        yield running


def create_key(stack: ServiceStack, tenant: str) -> str:
    result = stack._cli("keys", "create", "--tenant", tenant)
    assert result.returncode == 0, result.stderr
    assert "shown only this once" in result.stderr
    return result.stdout.strip()


def as_key(stack: ServiceStack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url, timeout=30, headers={"Authorization": f"Bearer {key}"})


def onnx_job(teacher_id: str, train_id: str, onnx_teacher) -> dict:
    hidden = next(
        v for node in onnx.load(onnx_teacher).graph.node for v in node.output if "relu" in v.lower()
    )
    return job_request(
        teacher_id, train_id, teacher={"file_id": teacher_id, "format": "onnx", "architecture": None},
        distillation={"features": [{"teacher": hidden, "student": "hidden.0"}]},
    )  # fmt: skip


def test_keys_scope_a_real_job_to_its_tenant(stack, task, onnx_teacher):
    acme_key, globex_key = create_key(stack, "acme"), create_key(stack, "globex")
    assert stack.client.get("/v1/jobs").status_code == 401
    assert stack.client.get("/v1/jobs").headers["www-authenticate"].startswith("Bearer")

    stack.client.headers["Authorization"] = f"Bearer {acme_key}"  # uploads and waits as acme
    teacher = stack.client.upload(onnx_teacher, "teacher")
    train = stack.client.upload(task.train, "dataset")
    created = stack.client.post("/v1/jobs", json=onnx_job(teacher["id"], train["id"], onnx_teacher))
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    second = stack.client.post("/v1/jobs", json=onnx_job(teacher["id"], train["id"], onnx_teacher))
    assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_jobs"
    refused = stack.client.post(
        "/v1/files", files={"file": ("t.pt2", pt2_teacher())}, data={"purpose": "teacher"}
    )
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "pt2_not_allowed"

    job = stack.client.wait_for_job(job_id)
    assert job["status"] == "succeeded", f"{job['error']}\n{stack.logs()}"
    assert job["metrics"]["teacher"]["accuracy"] > 0.9 and job["metrics"]["student"]["accuracy"] > 0.85
    losses = stack.client.get(f"/v1/jobs/{job_id}/metrics", params={"name": "feature_loss"}).json()["data"]
    assert losses and losses[-1]["value"] < losses[0]["value"]
    assert stack.client.get(f"/v1/jobs/{job_id}/artifacts/student.pt2").status_code == 200

    with as_key(stack, globex_key) as globex:
        for path in (
            f"/v1/jobs/{job_id}",
            f"/v1/jobs/{job_id}/artifacts/student.pt2",
            f"/v1/files/{train['id']}",
        ):
            assert globex.get(path).status_code == 404, path
        assert globex.get("/v1/jobs").json()["data"] == []

    revoked = stack._cli("keys", "revoke", acme_key.split("_")[1])
    assert revoked.returncode == 0, revoked.stderr
    assert stack.client.get(f"/v1/jobs/{job_id}").status_code == 401


def test_an_upload_without_a_key_is_refused_before_its_body_is_sent(stack):
    """The 401 answers the headers: the server neither waits for nor reads the declared gigabyte."""
    head = (
        "POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {10**9}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as connection:
        connection.sendall(head.encode())
        answer = b"".join(iter(lambda: connection.recv(65536), b"")).decode()  # until the server closes
    assert answer.startswith("HTTP/1.1 401 "), answer
    assert '"code":"unauthorized"' in answer and "connection: close" in answer.lower()
