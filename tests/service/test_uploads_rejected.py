"""Uploads that are not usable files: each is a 422 (or 413) that says what to do, and nothing is stored."""

import io
import json

import numpy as np
import pytest

from tests.service.helpers import (
    GARBAGE,
    assert_error,
    dataset_bytes,
    newest_id,
    npz_bytes,
    onnx_teacher,
    pickled_teacher,
    safetensors_raw,
    safetensors_teacher,
    stored_objects,
    upload,
    zip_bytes,
)

X = np.zeros((8, 4), np.float32)
Y = np.zeros(8, np.int64)
F32_2x2 = {"dtype": "F32", "shape": [2, 2]}  # 16 bytes


def cut_in_half(content: bytes) -> bytes:
    return content[: len(content) // 2]


def corrupt_member(content: bytes) -> bytes:
    damaged = bytearray(content)
    damaged[0:4] = b"XXXX"  # the first member's local header signature; the central directory is intact
    return bytes(damaged)


def object_array_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([{"a": 1}, None], dtype=object))
    return buffer.getvalue()


# (content, purpose, words the message must contain)
REJECTED = {
    "garbage teacher": (GARBAGE, "teacher", "safetensors"),
    "empty teacher": (b"", "teacher", "safetensors"),
    "truncated safetensors": (cut_in_half(safetensors_teacher()), "teacher", "truncated"),
    "safetensors header length huge": (safetensors_raw({}, header_len=2**60), "teacher", "header"),
    "safetensors header not json": (b"\x05\x00\x00\x00\x00\x00\x00\x00{{{{{", "teacher", "not JSON"),
    "safetensors header a list": (safetensors_raw([1, 2]), "teacher", "JSON object"),
    "safetensors overlapping offsets": (
        safetensors_raw(
            {"a": {**F32_2x2, "data_offsets": [0, 16]}, "b": {**F32_2x2, "data_offsets": [8, 24]}}, bytes(24)
        ),
        "teacher",
        "overlaps",
    ),
    "safetensors offsets past the end": (
        safetensors_raw(
            {"a": {**F32_2x2, "data_offsets": [0, 16]}, "b": {**F32_2x2, "data_offsets": [16, 32]}}, bytes(20)
        ),
        "teacher",
        "truncated",
    ),
    "safetensors offsets disagree with shape": (
        safetensors_raw({"a": {**F32_2x2, "data_offsets": [0, 12]}}, bytes(16)),
        "teacher",
        "invalid",
    ),
    "safetensors unknown dtype": (
        safetensors_raw({"a": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, bytes(16)),
        "teacher",
        "invalid",
    ),
    "safetensors negative offset": (
        safetensors_raw({"a": {**F32_2x2, "data_offsets": [-16, 0]}}, bytes(16)),
        "teacher",
        "invalid",
    ),
    "safetensors shape overflowing": (
        safetensors_raw({"a": {"dtype": "F32", "shape": [10**10] * 40, "data_offsets": [0, 4]}}, bytes(4)),
        "teacher",
        "invalid",
    ),
    "safetensors header nested too deep": (
        safetensors_raw({}, header_len=100_000)[:8] + b"[" * 100_000,
        "teacher",
        "not JSON",
    ),
    "pickled torch.save .pt": (pickled_teacher(), "teacher", "never unpickled"),
    "legacy pickled torch.save .pt": (pickled_teacher(legacy=True), "teacher", "never unpickled"),
    "truncated onnx": (onnx_teacher()[:-5], "teacher", "truncated"),
    "onnx with external data": (onnx_teacher(external_data=True), "teacher", "external data"),
    "onnx without a graph": (b"\x08\x0a", "teacher", "no opset_import or graph"),
    "zip that is not pt2": (zip_bytes({"model/weights.bin": b"1234"}), "teacher", "torch.export"),
    "npz as teacher": (dataset_bytes(), "teacher", "torch.export"),
    "npz without x": (npz_bytes(inputs=X, y=Y), "dataset", "`x`"),
    "npz with object array": (object_array_npz(), "dataset", "Python objects"),
    "npz y length differs": (npz_bytes(x=X, y=np.zeros(7, np.int64)), "dataset", "8 samples"),
    "npz y float": (npz_bytes(x=X, y=np.zeros(8, np.float32)), "dataset", "integer"),
    "npz y 2-D": (npz_bytes(x=X, y=np.zeros((8, 1), np.int64)), "dataset", "1-D"),
    "npz x 1-D": (npz_bytes(x=np.zeros(8, np.float32)), "dataset", "[N, ...]"),
    "npz x empty": (npz_bytes(x=np.zeros((0, 4), np.float32)), "dataset", "N > 0"),
    "npz x strings": (npz_bytes(x=np.array([["a"] * 4] * 8)), "dataset", "numeric"),
    "npz x member not npy": (zip_bytes({"x.npy": b"not an array"}), "dataset", "unreadable"),
    "npz damaged member": (corrupt_member(dataset_bytes()), "dataset", "damaged"),
    "dataset not a zip": (b"x,y\n1.0,0\n", "dataset", ".npz"),
    "tokenizer not json": (b"\xff\xfe not json", "tokenizer", "JSON"),
    "tokenizer json without model": (json.dumps({"vocab": {}}).encode(), "tokenizer", "`model`"),
    "tokenizer json list": (b"[1, 2, 3]", "tokenizer", "`model`"),
    "tokenizer nested too deep": (b"[" * 100_000, "tokenizer", "JSON"),
}


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # numpy, on the crafted shape
@pytest.mark.parametrize("content, purpose, hint", REJECTED.values(), ids=REJECTED.keys())
def test_rejected_upload_is_422_and_stores_nothing(client, storage_root, content, purpose, hint):
    newest, objects = newest_id(client, "files"), stored_objects(storage_root)
    error = assert_error(upload(client, content, purpose, "upload.bin"), 422, "file", "invalid_file")
    assert hint.lower() in error["message"].lower()
    assert "upload.bin" in error["message"]
    assert newest_id(client, "files") == newest
    assert stored_objects(storage_root) == objects


def test_pickle_message_says_how_to_convert(client):
    error = assert_error(
        upload(client, pickled_teacher(), "teacher", "teacher.pt"), 422, "file", "invalid_file"
    )
    assert "never unpickled" in error["message"]
    assert "safetensors.torch.save_file" in error["message"]


def test_object_array_is_never_unpickled(client, monkeypatch):
    def no_unpickling(*args, **kwargs):
        raise AssertionError("the service unpickled an upload")

    monkeypatch.setattr("pickle.load", no_unpickling)
    monkeypatch.setattr("pickle.loads", no_unpickling)
    assert_error(upload(client, object_array_npz(), "dataset"), 422, "file", "invalid_file")


@pytest.mark.parametrize("purpose", ["model", "TEACHER", "datasets"])
def test_unknown_purpose(client, storage_root, purpose):
    newest, objects = newest_id(client, "files"), stored_objects(storage_root)
    error = assert_error(upload(client, dataset_bytes(), purpose), 422, "purpose", "invalid_request")
    assert "dataset" in error["message"] and "teacher" in error["message"]
    assert newest_id(client, "files") == newest
    assert stored_objects(storage_root) == objects


def test_missing_purpose(client):
    response = client.post("/v1/files", files={"file": ("train.npz", dataset_bytes())})
    assert_error(response, 422, "purpose", "invalid_request")


def test_missing_file_field(client):
    newest = newest_id(client, "files")
    assert_error(client.post("/v1/files", data={"purpose": "dataset"}), 422, "file", "invalid_request")
    assert newest_id(client, "files") == newest


def test_not_multipart(client):
    response = client.post("/v1/files", json={"purpose": "dataset", "file": "AAAA"})
    assert response.status_code == 422
    assert response.json()["error"]["param"] in ("file", "purpose")


# Size limit


@pytest.fixture
def small_upload_limit(resources, monkeypatch):
    """DISTILL_MAX_UPLOAD_BYTES=1000 for one test (patched on the settings the app serves)."""
    monkeypatch.setattr(resources.settings, "max_upload_bytes", 1000)
    return 1000


def test_upload_just_over_the_limit_is_413(client, storage_root, small_upload_limit):
    newest, objects = newest_id(client, "files"), stored_objects(storage_root)
    error = assert_error(
        upload(client, bytes(small_upload_limit + 1), "dataset"), 413, "file", "file_too_large"
    )
    assert str(small_upload_limit) in error["message"]
    assert newest_id(client, "files") == newest
    assert stored_objects(storage_root) == objects  # no partial object left behind


def test_upload_at_the_limit_is_accepted(client, small_upload_limit):
    content = dataset_bytes(n=4, features=2)
    assert len(content) <= small_upload_limit
    assert upload(client, content, "dataset").status_code == 201


def test_upload_far_over_the_limit_is_refused_before_reading(client, storage_root, small_upload_limit):
    newest, objects = newest_id(client, "files"), stored_objects(storage_root)
    response = upload(client, bytes(3 * 1024 * 1024), "dataset")
    error = assert_error(response, 413, "file", "file_too_large")
    assert str(small_upload_limit) in error["message"]  # the limit itself, not the multipart allowance
    assert newest_id(client, "files") == newest
    assert stored_objects(storage_root) == objects


def test_chunked_upload_over_the_limit_is_413(client, storage_root, small_upload_limit):
    """No Content-Length: the body is counted as it arrives and cut off."""
    newest, objects = newest_id(client, "files"), stored_objects(storage_root)
    head = (
        b'--b0undary\r\nContent-Disposition: form-data; name="purpose"\r\n\r\ndataset\r\n'
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="big.npz"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )

    def body():
        yield head
        for _ in range(3):
            yield bytes(1024 * 1024)
        yield b"\r\n--b0undary--\r\n"

    response = client.post(
        "/v1/files", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b0undary"}
    )
    assert_error(response, 413, "file", "file_too_large")
    assert newest_id(client, "files") == newest
    assert stored_objects(storage_root) == objects
