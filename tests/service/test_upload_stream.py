"""Uploads stream from the request body into storage (`service/upload_stream.py`): the form's fields in
any order, repeated, missing, unknown or cut short, a file bigger than a batch, the size limit and a
client that goes away, each answered as FastAPI's form answered it, with nothing left in storage."""

import hashlib
import os
import time

import anyio
import pytest

from tests.service.helpers import (
    TOKENIZER,
    assert_error,
    dataset_bytes,
    safetensors_raw,
    stored_objects,
)

BOUNDARY = "b0undary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
END = f"--{BOUNDARY}--\r\n".encode()


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


PURPOSE = part("purpose", b"dataset")
DATASET = dataset_bytes()
FILE = part("file", DATASET, "train.npz")


def post(client, body: bytes, content_type: str | None = MULTIPART, **headers):
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.post("/v1/files", content=body, headers=headers)


def stored_one(client, storage_root, body: bytes) -> dict:
    """Posts `body`, which must store one file, and returns the file object."""
    before = stored_objects(storage_root)
    response = post(client, body)
    assert response.status_code == 201, response.text
    assert len(stored_objects(storage_root) - before) == 1
    return response.json()


# Accepted


@pytest.mark.parametrize(
    "body", [PURPOSE + FILE + END, FILE + PURPOSE + END], ids=["purpose first", "file first"]
)
def test_the_fields_in_either_order(client, storage_root, body):
    file = stored_one(client, storage_root, body)
    assert (file["purpose"], file["filename"], file["bytes"]) == ("dataset", "train.npz", len(DATASET))
    assert file["sha256"] == hashlib.sha256(DATASET).hexdigest()
    assert client.get(f"/v1/files/{file['id']}/content").content == DATASET


def test_unknown_fields_are_ignored(client, storage_root):
    body = part("note", b"hello") + PURPOSE + part("other", b"\x00" * 5000, "other.bin") + FILE + END
    file = stored_one(client, storage_root, body)
    assert (file["filename"], file["bytes"]) == ("train.npz", len(DATASET))


def test_a_second_file_part_replaces_the_first(client, storage_root):
    body = PURPOSE + FILE + part("file", TOKENIZER, "tokenizer.json") + END
    body = body.replace(b"dataset", b"tokenizer", 1)
    file = stored_one(client, storage_root, body)
    assert (file["filename"], file["bytes"], file["format"]) == ("tokenizer.json", len(TOKENIZER), "json")


def test_a_second_purpose_replaces_the_first(client, storage_root):
    file = stored_one(client, storage_root, part("purpose", b"teacher") + PURPOSE + FILE + END)
    assert file["purpose"] == "dataset"


def test_a_body_cut_inside_a_second_file_part_keeps_the_first(client, storage_root):
    """As Starlette's form did: a part the body ends in never arrived."""
    file = stored_one(client, storage_root, PURPOSE + FILE + part("file", TOKENIZER, "t.json")[:80])
    assert file["filename"] == "train.npz"


@pytest.mark.parametrize("size", [4 * 1024 * 1024 - 1, 4 * 1024 * 1024, 9 * 1024 * 1024 + 7])
def test_a_file_of_several_batches(client, storage_root, size):
    """Bytes go to the writer thread in batches of 4 MiB: a file of one, two and three batches, sent in
    uneven chunks with the delimiter split between two of them, is stored whole."""
    content = safetensors_raw(
        {"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}, os.urandom(size)
    )
    body = PURPOSE.replace(b"dataset", b"teacher") + part("file", content, "big.safetensors") + END
    cuts = [0, 1000, 3 * 1024 * 1024 + 17, len(body) - len(END) - 5, len(body)]

    def chunks():
        for start, stop in zip(cuts, cuts[1:], strict=False):
            yield body[start:stop]

    before = stored_objects(storage_root)
    response = client.post("/v1/files", content=chunks(), headers={"Content-Type": MULTIPART})
    assert response.status_code == 201, response.text
    assert response.json()["sha256"] == hashlib.sha256(content).hexdigest()
    (path,) = stored_objects(storage_root) - before
    assert path.read_bytes() == content


# Refused, with nothing stored


# name: (body, Content-Type, the error's param, words its message holds)
REFUSED = {
    "missing file": (PURPOSE + END, MULTIPART, "file", "file: Field required"),
    "missing purpose": (FILE + END, MULTIPART, "purpose", "purpose: Field required"),
    "missing both": (END, MULTIPART, "file", "file: Field required"),
    "file as a text field": (PURPOSE + part("file", DATASET) + END, MULTIPART, "file", "Expected UploadFile"),
    "file part, then file as a text field": (
        PURPOSE + FILE + part("file", b"x") + END,
        MULTIPART,
        "file",
        "Expected UploadFile",
    ),  # fmt: skip
    "purpose as a file": (
        part("purpose", b"dataset", "p.txt") + FILE + END,
        MULTIPART,
        "purpose",
        "Input should be",
    ),
    "unknown purpose after the file": (
        FILE + part("purpose", b"model") + END,
        MULTIPART,
        "purpose",
        "'dataset'",
    ),
    "body cut inside the file": (PURPOSE + FILE[:300], MULTIPART, "file", "file: Field required"),
    "body cut at the file's end": (PURPOSE + FILE, MULTIPART, "file", "file: Field required"),
    "body cut before purpose": (FILE + PURPOSE[:20], MULTIPART, "purpose", "purpose: Field required"),
    "empty body": (b"", MULTIPART, "file", "file: Field required"),
    "part without a name": (
        FILE + f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n".encode() + END,
        MULTIPART,
        None,
        '"name" must be provided',
    ),  # fmt: skip
    "malformed after the file": (
        FILE + f"--{BOUNDARY}\r\nBad Header\r\n\r\nx\r\n".encode() + END,
        MULTIPART,
        None,
        "Invalid multipart",
    ),  # fmt: skip
    "text field over 1 MiB after the file": (
        FILE + part("note", b"n" * (1024 * 1024 + 1)) + PURPOSE + END,
        MULTIPART,
        None,
        "maximum size of 1024KB",
    ),  # fmt: skip
    "missing boundary": (PURPOSE + FILE + END, "multipart/form-data", None, "Missing boundary"),
    "JSON": (b'{"purpose": "dataset"}', "application/json", "file", "file: Field required"),
    "no content type": (PURPOSE + FILE + END, None, "file", "file: Field required"),
}


@pytest.mark.parametrize("body, content_type, param, words", REFUSED.values(), ids=REFUSED.keys())
def test_refused_form_is_422_and_stores_nothing(client, nothing_stored, body, content_type, param, words):
    error = assert_error(post(client, body, content_type), 422, param, "invalid_request")
    assert words in error["message"]
    if param is None:
        assert "not a valid multipart form" in error["message"]


def test_a_file_over_the_limit_by_a_byte_after_several_batches(
    client, nothing_stored, resources, monkeypatch
):
    limit = 6 * 1024 * 1024
    monkeypatch.setattr(resources.settings, "max_upload_bytes", limit)
    response = post(client, PURPOSE + part("file", bytes(limit + 1), "big.npz") + END)
    error = assert_error(response, 413, "file", "file_too_large")
    assert str(limit) in error["message"]


def test_a_refused_format_after_several_batches_stores_nothing(client, nothing_stored):
    response = post(client, PURPOSE + part("file", os.urandom(5 * 1024 * 1024), "noise.npz") + END)
    assert_error(response, 422, "file", "invalid_file")


# The client goes away


def test_a_client_gone_mid_upload_leaves_nothing(client, nothing_stored, resources, monkeypatch):
    """The server hears `http.disconnect` inside the file part, after a batch went to the writer thread:
    the request is answered (to nobody, without a 500) only once the partial file is gone, even when the
    writer is slow to stop."""
    write = resources.storage.write

    def slow_to_stop(key, chunks, max_bytes=None):
        def stopping_late():
            try:
                yield from chunks
            except BaseException:
                time.sleep(0.3)  # the partial file is deleted after this, by `write`
                raise

        return write(key, stopping_late(), max_bytes)

    monkeypatch.setattr(resources.storage, "write", slow_to_stop)
    head = part("file", b"", "x.npz")[:-2]  # the file part's headers, then its first bytes: no end
    messages = [PURPOSE + head, *[bytes(1024 * 1024)] * 6]
    sent = []

    async def receive():
        if messages:
            return {"type": "http.request", "body": messages.pop(0), "more_body": True}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/files", "raw_path": b"/v1/files", "root_path": "", "query_string": b"",
        "headers": [(b"content-type", MULTIPART.encode()), (b"host", b"testserver")],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80), "state": {},
    }  # fmt: skip
    anyio.run(client.app, scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 422


def test_the_openapi_document_describes_the_form_as_before(client):
    """FastAPI described the form it parsed; the route that reads its body itself describes the same one."""
    operation = client.get("/openapi.json").json()["paths"]["/v1/files"]["post"]
    assert operation["requestBody"] == {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "properties": {
                        "file": {"type": "string", "contentMediaType": "application/octet-stream",
                                 "title": "File", "description": "The file's bytes."},
                        "purpose": {"type": "string", "enum": ["teacher", "dataset", "tokenizer"],
                                    "title": "Purpose"},
                    },
                    "type": "object",
                    "required": ["file", "purpose"],
                    "title": "Body_upload_file_v1_files_post",
                }
            }
        },
    }  # fmt: skip
