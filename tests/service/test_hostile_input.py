"""Hostile uploads and request bodies: each is a clear 4xx with the spec's error body, never a 500,
and refused from headers and directories alone (nothing inflated, nothing stored)."""

import io
import zipfile

import numpy as np
import pytest

from engine.plan import archives
from service import upload_formats
from tests.service.helpers import (
    assert_error,
    dataset_bytes,
    newest_id,
    npz_bytes,
    safetensors_raw,
    stored_objects,
    upload,
    zip_bytes,
)

X = np.zeros((8, 4), np.float32)
Y = np.zeros(8, np.int64)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_header_only(shape: tuple, dtype=np.float32) -> bytes:
    """A .npy member whose header declares `shape` but which holds no data."""
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def npz_declaring(declared_sizes: dict[str, int], **arrays) -> bytes:
    """An .npz whose central directory declares other uncompressed sizes than its members hold
    (sizes past 4 GiB go into the ZIP64 extra field, as a real archive that big has them)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, array in arrays.items():
            archive.writestr(f"{name}.npy", npy_bytes(array))
        for info in archive.infolist():
            info.file_size = declared_sizes.get(info.filename, info.file_size)
    return buffer.getvalue()


def deflate_bomb(megabytes: int) -> bytes:
    """An honest .npz of zeros, compressed: some kilobytes that inflate to `megabytes` MiB."""
    rows = megabytes * 1024 * 1024 // (4 * 256)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            member.write(npy_header_only((rows, 256)))
            for _ in range(megabytes):
                member.write(bytes(1024 * 1024))
    return buffer.getvalue()


def assert_rejected(response, *hints: str) -> dict:
    error = assert_error(response, 422, "file", "invalid_file")
    for hint in hints:
        assert hint.lower() in error["message"].lower(), error["message"]
    return error


# Zip and npz bombs


@pytest.mark.parametrize("array", ["x", "y"])
def test_npy_header_with_enormous_shape_is_refused(client, nothing_stored, array):
    """10^12 elements declared in a member of a few bytes: refused from the header, nothing allocated."""
    arrays = {"x.npy": npy_bytes(X), "y.npy": npy_bytes(Y)}
    shape = (10**12, 4) if array == "x" else (10**12,)
    arrays[f"{array}.npy"] = npy_header_only(shape, np.float32 if array == "x" else np.int64)
    response = upload(client, zip_bytes(arrays), "dataset", "bomb.npz")
    assert_rejected(response, f"array '{array}'", "declares", str(10**12), "damaged")


def test_npy_header_disagreeing_with_member_size_is_refused(client, nothing_stored):
    """A truncated array: its shape needs more bytes than its member holds."""
    truncated = npy_bytes(np.zeros((8, 4), np.float32))[:-16]
    response = upload(client, zip_bytes({"x.npy": truncated}), "dataset", "cut.npz")
    assert_rejected(response, "declares", "112 bytes of data")


def test_member_declaring_a_huge_uncompressed_size_is_refused(client, nothing_stored):
    """A ZIP64 directory entry that claims 10^12 bytes for a member of a few hundred."""
    content = npz_declaring({"x.npy": 10**12}, x=X, y=Y)
    assert len(content) < 2048
    response = upload(client, content, "dataset", "bomb.npz")
    total = 10**12 + len(npy_bytes(Y))
    assert_rejected(response, f"{total} bytes uncompressed", str(upload_formats.MAX_NPZ_UNCOMPRESSED_BYTES))


def test_total_uncompressed_size_over_the_limit_is_refused(client, nothing_stored, monkeypatch):
    """The limit is on all members together, each of which may be small."""
    monkeypatch.setattr(upload_formats, "MAX_NPZ_UNCOMPRESSED_BYTES", 1000)
    content = npz_bytes(x=X, y=Y, extra=np.zeros(200, np.float32))  # 128 + 32 + 800 bytes of data
    response = upload(client, content, "dataset", "big.npz")
    assert_rejected(response, "uncompressed", "1000 bytes")


def test_deflate_bomb_is_refused_without_inflating_it(client, nothing_stored, monkeypatch):
    """Kilobytes of deflated zeros that inflate to 64 MiB, with an honest header: the ratio gives it away.
    Only the array headers are inflated."""
    monkeypatch.setattr(archives, "RATIO_CHECKED_ABOVE", 1024 * 1024)
    content = deflate_bomb(64)
    assert len(content) < 256 * 1024
    inflated = []
    real_read = zipfile.ZipExtFile.read

    def counting_read(self, n=-1):
        data = real_read(self, n)
        inflated.append(len(data))
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting_read)
    response = upload(client, content, "dataset", "bomb.npz")
    assert_rejected(response, "zip bomb", str(64 * 1024 * 1024 + 128))
    assert sum(inflated) < 64 * 1024, inflated


def test_compressed_datasets_are_still_accepted(client):
    """numpy.savez_compressed of real data compresses far less than a bomb."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez_compressed(buffer, x=rng.standard_normal((64, 8)).astype(np.float32), y=np.arange(64) % 3)
    response = upload(client, buffer.getvalue(), "dataset", "train.npz")
    assert response.status_code == 201, response.text


def test_extra_arrays_are_accepted(client):
    response = upload(client, npz_bytes(x=X, y=Y, classes=np.arange(3)), "dataset", "train.npz")
    assert response.status_code == 201, response.text


# Many members, nested archives


def test_npz_with_many_members_is_refused(client, nothing_stored):
    members = {"x.npy": npy_bytes(X), "y.npy": npy_bytes(Y)}
    members.update({f"a{i}.npy": npy_bytes(np.zeros(1, np.float32)) for i in range(1000)})
    response = upload(client, zip_bytes(members), "dataset", "many.npz")
    assert_rejected(response, "1002 members", str(upload_formats.MAX_NPZ_MEMBERS))


@pytest.mark.parametrize("purpose", ["dataset", "teacher"])
def test_zip_directory_too_big_to_read_is_refused(client, nothing_stored, monkeypatch, purpose):
    """Checked from the end record, before `zipfile` reads the directory into memory."""
    monkeypatch.setattr(archives, "MAX_ZIP_DIRECTORY_BYTES", 4096)

    def no_directory_reads(*args, **kwargs):
        raise AssertionError("the central directory was read")

    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", no_directory_reads)
    members = {f"archive/data/{i:05d}.npy": b"" for i in range(200)}
    response = upload(client, zip_bytes(members), purpose, "many.zip")
    assert_rejected(response, "directory", "200 members", "4096 bytes")


def test_nested_zip_in_npz_is_refused(client, nothing_stored):
    members = {"x.npy": npy_bytes(X), "y.npy": npy_bytes(Y), "more.zip": dataset_bytes()}
    response = upload(client, zip_bytes(members), "dataset", "nested.npz")
    assert_rejected(response, "'more.zip'", "not a .npy array")


def test_npz_member_that_is_a_zip_is_refused(client, nothing_stored):
    response = upload(client, zip_bytes({"x.npy": dataset_bytes()}), "dataset", "nested.npz")
    assert_rejected(response, "array 'x'", "unreadable")


def test_directory_entry_in_npz_is_refused(client, nothing_stored):
    members = {"x.npy": npy_bytes(X), "data/": b""}
    response = upload(client, zip_bytes(members), "dataset", "dir.npz")
    assert_rejected(response, "'data/'")


# Malformed multipart and JSON bodies

BOUNDARY = "b0undary"
PURPOSE_PART = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\ndataset\r\n'.encode()
FILE_PART = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="train.npz"\r\n'
    "Content-Type: application/octet-stream\r\n\r\n"
).encode() + dataset_bytes()
END = f"\r\n--{BOUNDARY}--\r\n".encode()
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"

# name: (Content-Type or None, body, the error's `param`)
MALFORMED_UPLOADS = {
    "missing boundary": ("multipart/form-data", PURPOSE_PART + FILE_PART + END, None),
    "other boundary": ("multipart/form-data; boundary=other", PURPOSE_PART + FILE_PART + END, None),
    "garbage body": (MULTIPART, bytes(range(256)) * 4, None),
    "part without a name": (
        MULTIPART,
        f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx".encode() + END,
        None,
    ),
    "truncated body": (MULTIPART, PURPOSE_PART + FILE_PART[:100], "file"),
    "cut before the file's end": (MULTIPART, PURPOSE_PART + FILE_PART, "file"),
    "empty body": (MULTIPART, b"", "file"),
    "field over 1 MiB": (
        MULTIPART,
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'.encode()
        + b"d" * (1024 * 1024 + 1)
        + END,
        None,
    ),
    "json": ("application/json", b'{"purpose": "dataset", "file": "eA=="}', "file"),
    "text/plain": ("text/plain", b"hello", "file"),
    "no content type": (None, PURPOSE_PART + FILE_PART + END, "file"),
    "urlencoded": ("application/x-www-form-urlencoded", b"purpose=dataset&file=abc", "file"),
}


@pytest.mark.parametrize(
    "content_type, body, param", MALFORMED_UPLOADS.values(), ids=MALFORMED_UPLOADS.keys()
)
def test_malformed_upload_body_is_422(client, nothing_stored, content_type, body, param):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/v1/files", content=body, headers=headers)
    error = assert_error(response, 422, param, "invalid_request")
    if param is None:
        assert "multipart" in error["message"]


@pytest.mark.parametrize(
    "body, hint",
    [
        (b"\xff\xfe\xfd not utf-8", "UnicodeDecodeError"),
        (b"[" * 100_000, "RecursionError"),
        (b'{"student": ', "not valid JSON"),
    ],
    ids=["not utf-8", "nested too deep", "cut short"],
)
def test_unparsable_json_body_is_422(client, body, hint):
    newest = newest_id(client, "jobs")
    response = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    error = assert_error(response, 422, None, "invalid_request")
    assert hint in error["message"] and "JSON" in error["message"]
    assert newest_id(client, "jobs") == newest


# Integers longer than CPython converts (4,300 digits): a ValueError that is not a JSONDecodeError

HUGE = "9" * 5000


@pytest.mark.parametrize(
    ("purpose", "content"),
    [
        ("dataset", f'{{"text": "a", "label": {HUGE}}}\n'.encode()),
        ("tokenizer", f'{{"model": {{"type": "WordLevel"}}, "version": {HUGE}}}'.encode()),
        (
            "teacher",
            safetensors_raw(
                f'{{"w": {{"dtype": "F32", "shape": [{HUGE}], "data_offsets": [0, 4]}}}}', bytes(4)
            ),
        ),
    ],
    ids=["jsonl label", "tokenizer", "safetensors header"],
)
def test_an_integer_of_thousands_of_digits_is_a_422(client, storage_root, purpose, content):
    objects = stored_objects(storage_root)
    assert_error(upload(client, content, purpose), 422, "file", "invalid_file")
    assert stored_objects(storage_root) == objects


@pytest.mark.parametrize("header", [f"bytes={HUGE}-", f"bytes=0-{HUGE}", f"bytes=-{HUGE}"])
def test_a_range_of_thousands_of_digits_is_answered(client, header):
    file = upload(client, dataset_bytes(), "dataset").json()
    response = client.get(f"/v1/files/{file['id']}/content", headers={"Range": header})
    assert response.status_code in (200, 206, 416), response.text
