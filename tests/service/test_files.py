"""Uploading, listing, downloading and deleting files (`/v1/files`); uploads, downloads and deletes on a
local folder and on an S3 bucket (`storage_client`)."""

import hashlib
import time

import pytest

from tests.service.helpers import (
    TOKENIZER,
    assert_error,
    dataset_bytes,
    job_request,
    onnx_teacher,
    pt2_teacher,
    safetensors_teacher,
    stored_objects,
    upload,
    upload_ok,
)
from tests.storages import stored_keys

UPLOADS = {
    "dataset npz": (dataset_bytes, "dataset", "train.npz", "npz"),
    "unlabeled dataset npz": (lambda: dataset_bytes(labels=False), "dataset", "transfer.npz", "npz"),
    "teacher safetensors": (safetensors_teacher, "teacher", "teacher.safetensors", "safetensors"),
    "teacher pt2": (pt2_teacher, "teacher", "teacher.pt2", "pt2"),
    "teacher onnx": (onnx_teacher, "teacher", "teacher.onnx", "onnx"),
    "tokenizer json": (lambda: TOKENIZER, "tokenizer", "tokenizer.json", "json"),
}


@pytest.mark.parametrize("make, purpose, filename, file_format", UPLOADS.values(), ids=UPLOADS.keys())
def test_upload_each_purpose(storage_client, make, purpose, filename, file_format):
    content = make()
    before = int(time.time())
    response = upload(storage_client, content, purpose, filename)
    assert response.status_code == 201, response.text
    body = response.json()
    keys = {"id", "object", "purpose", "filename", "bytes", "sha256", "format", "created_at", "model"}
    assert set(body) == keys
    assert body["model"] is None  # an hf teacher's (tests/service/test_hf_uploads.py)
    assert body["id"].startswith("file-")
    assert body["object"] == "file"
    assert body["purpose"] == purpose
    assert body["filename"] == filename
    assert body["bytes"] == len(content)
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["format"] == file_format
    assert before <= body["created_at"] <= int(time.time())

    assert storage_client.get(f"/v1/files/{body['id']}").json() == body
    assert storage_client.get(f"/v1/files/{body['id']}/content").content == content


def test_retrieve_unknown_file_is_404(client):
    assert_error(client.get("/v1/files/file-doesnotexist"), 404, None, "not_found")
    assert_error(client.get("/v1/files/file-doesnotexist/content"), 404, None, "not_found")
    assert_error(client.delete("/v1/files/file-doesnotexist"), 404, None, "not_found")


def test_upload_path_traversal_filename_is_stored_as_basename(client, storage_root):
    before = stored_objects(storage_root)
    body = upload_ok(client, TOKENIZER, "tokenizer", "../../etc/passwd")
    assert body["filename"] == "passwd"
    new = stored_objects(storage_root) - before
    assert len(new) == 1
    (path,) = new
    assert path.is_relative_to(storage_root) and path.name == body["id"]
    download = client.get(f"/v1/files/{body['id']}/content")
    assert download.content == TOKENIZER
    assert download.headers["content-disposition"] == 'attachment; filename="passwd"'


def test_upload_windows_path_and_non_ascii_filename(client):
    body = upload_ok(client, TOKENIZER, "tokenizer", "C:\\Users\\me\\données.json")
    assert body["filename"] == "données.json"
    download = client.get(f"/v1/files/{body['id']}/content")
    assert download.status_code == 200
    assert download.content == TOKENIZER
    assert "filename*=UTF-8''donn%C3%A9es.json" in download.headers["content-disposition"]


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("invoice\u202egpj.npz", "invoicegpj.npz"),  # RIGHT-TO-LEFT OVERRIDE: would show as "invoice.jpg"
        ("a\u2066b\u2069c\u200fd.json", "abcd.json"),  # isolates and a RIGHT-TO-LEFT MARK
        ("x\u0085y\u009bz.json", "xyz.json"),  # C1 controls
        ("\u202e\u2067", "upload"),  # nothing left
    ],
    ids=["override", "isolates and marks", "C1 controls", "only controls"],
)
def test_file_names_lose_their_bidirectional_and_control_characters(client, sent, kept):
    body = upload_ok(client, TOKENIZER, "tokenizer", sent)
    assert body["filename"] == kept
    assert client.get(f"/v1/files/{body['id']}").json()["filename"] == kept


# Listing


def test_list_pages_through_uploads_with_cursor(client):
    ids = [upload_ok(client, TOKENIZER, "tokenizer", f"tok-{i}.json")["id"] for i in range(3)]
    newest_first = ids[::-1]

    first = client.get("/v1/files", params={"purpose": "tokenizer", "limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert page["object"] == "list"
    assert [f["id"] for f in page["data"]] == newest_first[:2]
    assert page["has_more"] is True

    second = client.get(
        "/v1/files", params={"purpose": "tokenizer", "limit": 2, "after": newest_first[1]}
    ).json()
    assert second["data"][0]["id"] == newest_first[2]

    # Walking every page visits each file once, in order, and ends with has_more false.
    seen, after = [], None
    while True:
        params = {"purpose": "tokenizer", "limit": 2, **({"after": after} if after else {})}
        page = client.get("/v1/files", params=params).json()
        seen += [f["id"] for f in page["data"]]
        if not page["has_more"]:
            break
        assert len(page["data"]) == 2
        after = page["data"][-1]["id"]
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i in ids] == newest_first


def test_list_default_page_includes_new_upload(client):
    body = upload_ok(client, TOKENIZER, "tokenizer", "latest.json")
    page = client.get("/v1/files").json()
    assert page["object"] == "list"
    assert page["data"][0] == body
    assert len(page["data"]) <= 20


def test_list_filters_by_purpose(client, dataset_file, teacher_file):
    datasets = client.get("/v1/files", params={"purpose": "dataset", "limit": 100}).json()["data"]
    teachers = client.get("/v1/files", params={"purpose": "teacher", "limit": 100}).json()["data"]
    assert {f["purpose"] for f in datasets} == {"dataset"}
    assert {f["purpose"] for f in teachers} == {"teacher"}
    assert dataset_file["id"] in {f["id"] for f in datasets}
    assert teacher_file["id"] in {f["id"] for f in teachers}
    assert teacher_file["id"] not in {f["id"] for f in datasets}


@pytest.mark.parametrize("limit", [0, -1, 101, "many"])
def test_list_limit_out_of_range(client, limit):
    assert_error(client.get("/v1/files", params={"limit": limit}), 422, "limit", "invalid_request")


def test_list_limit_bounds_accepted(client):
    for limit in (1, 100):
        response = client.get("/v1/files", params={"limit": limit})
        assert response.status_code == 200
        assert len(response.json()["data"]) <= limit


def test_list_unknown_after(client):
    assert_error(
        client.get("/v1/files", params={"after": "file-doesnotexist"}), 422, "after", "invalid_cursor"
    )


def test_list_after_outside_the_filter(client, teacher_file):
    response = client.get("/v1/files", params={"purpose": "dataset", "after": teacher_file["id"]})
    assert_error(response, 422, "after", "invalid_cursor")


def test_list_unknown_purpose_filter(client):
    assert_error(client.get("/v1/files", params={"purpose": "model"}), 422, "purpose", "invalid_request")


# Downloads

CONTENT = b'{"model": {"type": "WordLevel"}, "pad": "0123456789"}'


@pytest.fixture
def text_file(storage_client) -> dict:
    return upload_ok(storage_client, CONTENT, "tokenizer", "tokenizer.json")


def content_url(file: dict) -> str:
    return f"/v1/files/{file['id']}/content"


def test_download_whole_file(storage_client, text_file):
    response = storage_client.get(content_url(text_file))
    assert response.status_code == 200
    assert response.content == CONTENT
    assert response.headers["etag"] == f'"{hashlib.sha256(CONTENT).hexdigest()}"'
    assert response.headers["etag"] == f'"{text_file["sha256"]}"'
    assert response.headers["content-length"] == str(len(CONTENT))
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["content-disposition"] == 'attachment; filename="tokenizer.json"'


@pytest.mark.parametrize("range_header", [None, "bytes=2-5"])
def test_head_answers_a_downloads_headers_without_its_body(storage_client, text_file, range_header):
    """`curl -I`, `wget --spider`: what a GET would say, with no bytes."""
    headers = {"Range": range_header} if range_header else {}
    got, head = (
        storage_client.get(content_url(text_file), headers=headers),
        storage_client.head(content_url(text_file), headers=headers),
    )
    assert head.status_code == got.status_code and head.content == b""
    for name in ("content-length", "etag", "content-type", "content-disposition", "accept-ranges"):
        assert head.headers[name] == got.headers[name], name
    assert head.headers.get("content-range") == got.headers.get("content-range")
    assert storage_client.head("/v1/files/file-doesnotexist/content").status_code == 404


def test_head_answers_health(client):
    assert client.head("/healthz").status_code == 200
    assert client.head("/readyz").status_code == 200


def test_download_dataset_is_a_zip(client, dataset_file):
    response = client.get(content_url(dataset_file))
    assert response.headers["content-type"] == "application/zip"
    assert hashlib.sha256(response.content).hexdigest() == dataset_file["sha256"]


@pytest.mark.parametrize(
    "range_header, start, end",
    [
        ("bytes=2-5", 2, 5),
        ("bytes=0-0", 0, 0),
        ("bytes=-3", len(CONTENT) - 3, len(CONTENT) - 1),
        ("bytes=5-", 5, len(CONTENT) - 1),
        ("bytes=10-99999", 10, len(CONTENT) - 1),  # an end past the file is clamped
        (f"bytes=-{len(CONTENT) + 50}", 0, len(CONTENT) - 1),  # a suffix longer than the file is all of it
    ],
)
def test_download_range(storage_client, text_file, range_header, start, end):
    response = storage_client.get(content_url(text_file), headers={"Range": range_header})
    assert response.status_code == 206, response.text
    assert response.content == CONTENT[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(CONTENT)}"
    assert response.headers["content-length"] == str(end - start + 1)
    assert response.headers["etag"] == f'"{text_file["sha256"]}"'


@pytest.mark.parametrize(
    "range_header", [f"bytes={len(CONTENT)}-", "bytes=9999-10000", "bytes=5-2", "bytes=-0"]
)
def test_download_unsatisfiable_range(storage_client, text_file, range_header):
    response = storage_client.get(content_url(text_file), headers={"Range": range_header})
    assert_error(response, 416, "Range", "range_not_satisfiable")
    assert response.headers["content-range"] == f"bytes */{len(CONTENT)}"


@pytest.mark.parametrize("range_header", ["bytes=0-1,4-5", "items=0-3"])
def test_download_ignores_ranges_it_does_not_serve(storage_client, text_file, range_header):
    response = storage_client.get(content_url(text_file), headers={"Range": range_header})
    assert response.status_code == 200
    assert response.content == CONTENT


def test_download_if_range_mismatch_sends_everything(storage_client, text_file):
    response = storage_client.get(
        content_url(text_file), headers={"Range": "bytes=2-5", "If-Range": '"stale"'}
    )
    assert response.status_code == 200
    assert response.content == CONTENT
    matching = storage_client.get(
        content_url(text_file), headers={"Range": "bytes=2-5", "If-Range": f'"{text_file["sha256"]}"'}
    )
    assert matching.status_code == 206
    assert matching.content == CONTENT[2:6]


def test_download_if_none_match(storage_client, text_file):
    etag = storage_client.get(content_url(text_file)).headers["etag"]
    for header in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        response = storage_client.get(content_url(text_file), headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == etag
    changed = storage_client.get(content_url(text_file), headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200
    assert changed.content == CONTENT


# Deleting


def test_delete_file(storage_client, text_file):
    storage = storage_client.app.state.resources.storage
    before = stored_keys(storage)
    response = storage_client.delete(f"/v1/files/{text_file['id']}")
    assert response.status_code == 200
    assert response.json() == {"id": text_file["id"], "object": "file", "deleted": True}
    assert_error(storage_client.get(f"/v1/files/{text_file['id']}"), 404, None, "not_found")
    assert_error(storage_client.get(content_url(text_file)), 404, None, "not_found")
    assert_error(storage_client.delete(f"/v1/files/{text_file['id']}"), 404, None, "not_found")
    ids = {
        f["id"]
        for f in storage_client.get("/v1/files", params={"purpose": "tokenizer", "limit": 100}).json()["data"]
    }
    assert text_file["id"] not in ids
    assert len(before - stored_keys(storage)) == 1


@pytest.mark.parametrize("role", ["teacher", "dataset"])
def test_delete_file_used_by_queued_job_is_409(client, teacher_file, dataset_file, role):
    job = client.post("/v1/jobs", json=job_request(teacher_file["id"], dataset_file["id"])).json()
    assert job["status"] == "queued"
    used = teacher_file if role == "teacher" else dataset_file
    content = client.get(content_url(used)).content

    error = assert_error(client.delete(f"/v1/files/{used['id']}"), 409, None, "file_in_use")
    assert job["id"] in error["message"]
    assert client.get(f"/v1/files/{used['id']}").json() == used
    download = client.get(content_url(used))
    assert download.status_code == 200
    assert download.content == content
    assert hashlib.sha256(download.content).hexdigest() == used["sha256"]

    # Once the job has finished (here: cancelled), the file can go.
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    assert client.delete(f"/v1/files/{used['id']}").status_code == 200
