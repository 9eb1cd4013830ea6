"""The API on an S3 bucket (moto's server): downloads answered with a redirect to a presigned URL when
DISTILL_S3_PRESIGN is on, and a bucket it cannot use named by /readyz as a 503."""

import hashlib
import os

import httpx
import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient

from service.main import create_app
from tests.service.helpers import (
    assert_error,
    dataset_bytes,
    job_request,
    safetensors_raw,
    safetensors_teacher,
    upload,
    upload_ok,
)
from tests.service.tenants import finish_job, make_settings

pytestmark = pytest.mark.s3
MiB = 1024 * 1024
CONTENT = b'{"model": {"type": "WordLevel"}, "vocab": "' + os.urandom(32).hex().encode() + b'"}'


@pytest.fixture(scope="module")
def presigning(bucket, tmp_path_factory) -> TestClient:
    settings = make_settings(
        tmp_path_factory.mktemp("presign"), storage_url=f"s3://{bucket}/p", s3_presign=True
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_download_is_a_redirect_to_a_presigned_url_with_the_bytes(presigning):
    file = upload_ok(presigning, CONTENT, "tokenizer", "tokenizer.json")
    redirect = presigning.get(f"/v1/files/{file['id']}/content", follow_redirects=False)
    assert redirect.status_code == 307
    assert redirect.headers["etag"] == f'"{file["sha256"]}"'
    with httpx.Client(follow_redirects=True) as outside:  # no key: the URL itself grants the GET
        whole = outside.get(redirect.headers["location"])
        part = outside.get(redirect.headers["location"], headers={"Range": "bytes=2-9"})
    assert whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == file["sha256"]
    assert whole.headers["content-type"] == "application/json"
    assert whole.headers["content-disposition"] == 'attachment; filename="tokenizer.json"'
    assert (part.status_code, part.content) == (206, CONTENT[2:10])


def test_head_and_if_none_match_are_answered_by_the_api(presigning):
    file = upload_ok(presigning, CONTENT, "tokenizer", "tokenizer.json")
    url = f"/v1/files/{file['id']}/content"
    head = presigning.head(url)
    assert (head.status_code, head.headers["content-length"]) == (200, str(len(CONTENT)))
    unchanged = presigning.get(url, headers={"If-None-Match": f'"{file["sha256"]}"'})
    assert unchanged.status_code == 304


def test_an_artifact_download_is_a_redirect_too(presigning):
    teacher = upload_ok(presigning, safetensors_teacher(), "teacher", "teacher.safetensors")
    dataset = upload_ok(presigning, dataset_bytes(), "dataset", "train.npz")
    job = presigning.post("/v1/jobs", json=job_request(teacher["id"], dataset["id"])).json()
    settings = presigning.app.state.resources.settings
    finish_job(settings, job["id"], artifact=CONTENT)
    redirect = presigning.get(f"/v1/jobs/{job['id']}/artifacts/student.json", follow_redirects=False)
    assert redirect.status_code == 307
    assert httpx.get(redirect.headers["location"]).content == CONTENT


def test_a_missing_bucket_is_named_by_readyz_and_is_a_503_not_a_500(s3_endpoint, tmp_path):
    settings = make_settings(tmp_path, storage_url="s3://no-such-bucket-here/prefix")
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
        uploaded = upload(client, CONTENT, "tokenizer", "tokenizer.json")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and (body["database"], body["broker"]) == ("ok", "ok")
    assert "'no-such-bucket-here'" in body["storage"] and "does not exist" in body["storage"]
    assert "AWS_ENDPOINT_URL" in body["storage"]
    error = assert_error(uploaded, 503, None, "storage_unavailable")
    assert "'no-such-bucket-here'" in error["message"]


def test_readyz_names_a_bucket_that_refuses_access(bucket, tmp_path, monkeypatch):
    with TestClient(create_app(make_settings(tmp_path, storage_url=f"s3://{bucket}/refused"))) as client:
        monkeypatch.setattr(client.app.state.resources.storage.client, "head_bucket", _refused)
        response = client.get("/readyz")
    assert response.status_code == 503
    assert (
        "refuses access" in response.json()["storage"] and "AWS_ACCESS_KEY_ID" in response.json()["storage"]
    )


def _refused(**_):  # moto grants every key: S3's answer to a wrong one
    raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadBucket")


def test_the_format_check_of_an_upload_reads_its_header_not_the_whole_file(presigning):
    storage = presigning.app.state.resources.storage
    asked = []
    storage.client.meta.events.register(
        "before-call.s3.GetObject", lambda params, **_: asked.append(params["headers"]["Range"])
    )
    content = safetensors_raw(
        {"w": {"dtype": "U8", "shape": [MiB * 24], "data_offsets": [0, MiB * 24]}}, bytes(MiB * 24)
    )
    upload_ok(presigning, content, "teacher", "big.safetensors")
    spans = [tuple(map(int, r.removeprefix("bytes=").split("-"))) for r in asked]
    assert 0 < sum(last - first + 1 for first, last in spans) <= MiB
