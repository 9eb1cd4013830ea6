"""Uploads stream through the real API process: a chunked body of many batches is stored whole, and a
client that hangs up inside the file leaves nothing behind, neither the file nor a partial one."""

import hashlib
import os
import socket
import time

import pytest

from tests.service.helpers import safetensors_raw

pytestmark = pytest.mark.e2e

BOUNDARY = "b0undary"
MiB = 1024 * 1024


def teacher(size: int) -> bytes:
    """A safetensors file of one uint8 tensor of `size` random bytes."""
    return safetensors_raw(
        {"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}, os.urandom(size)
    )


def file_part_head(filename: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nteacher\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'
    ).encode()


def stored_files(stack) -> set:
    folder = stack.home / "storage" / "files"
    return {path for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()


def test_a_chunked_upload_of_many_batches_is_stored_whole(stack):
    content = teacher(40 * MiB + 3)

    def body():
        yield file_part_head("big.safetensors")
        for start in range(0, len(content), 3 * MiB + 1):  # chunks that do not line up with anything
            yield content[start : start + 3 * MiB + 1]
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    response = stack.client.post(
        "/v1/files", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )
    assert response.status_code == 201, response.text
    file = response.json()
    assert (file["bytes"], file["sha256"]) == (len(content), hashlib.sha256(content).hexdigest())
    assert stack.client.get(f"/v1/files/{file['id']}/content").content == content


def test_a_client_that_hangs_up_inside_the_file_leaves_nothing(stack):
    before = stored_files(stack)
    head = (
        "POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {10**9}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as connection:
        connection.sendall(head + file_part_head("gone.safetensors"))
        for _ in range(12):  # three batches for the writer thread, and the start of a fourth
            connection.sendall(bytes(MiB))
        assert eventually(
            lambda: any(path.name.startswith(".partial-") for path in stored_files(stack) - before)
        )
    assert eventually(lambda: stored_files(stack) == before)  # the hang-up is heard at the next read
    assert stack.client.get("/healthz").status_code == 200
    again = stack.client.post(
        "/v1/files", files={"file": ("t.safetensors", teacher(100))}, data={"purpose": "teacher"}
    )
    assert again.status_code == 201, again.text


def eventually(condition, seconds: float = 30) -> bool:
    """Whether `condition()` holds within `seconds` (polled): a bound on waiting, not a timing check."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
