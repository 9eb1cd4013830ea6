"""Local storage writes atomically, with the size and sha256 of what it stored, from chunks of any
bytes-like kind, and leaves nothing behind when a write fails or goes past its limit (what an upload
that stops half way relies on)."""

import hashlib
import os
from pathlib import Path

import pytest

from core.storage import LocalStorage, TooLarge


def files_in(root) -> set:
    return {path.relative_to(root) for path in root.rglob("*") if path.is_file()}


def test_write_stores_the_chunks_with_their_size_and_sha256(tmp_path):
    storage = LocalStorage(tmp_path)
    data = os.urandom(5 * 1024 * 1024)
    stored = storage.write(
        "files/t/f", (memoryview(data)[i : i + 300_000] for i in range(0, len(data), 300_000))
    )
    assert (stored.bytes, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert (tmp_path / "files/t/f").read_bytes() == data
    assert files_in(tmp_path) == {Path("files/t/f")}


def test_write_past_the_limit_stores_nothing(tmp_path):
    storage = LocalStorage(tmp_path)
    with pytest.raises(TooLarge):
        storage.write("files/t/f", [bytes(600), bytes(600)], max_bytes=1000)
    assert files_in(tmp_path) == set()


def test_a_failing_stream_stores_nothing_and_keeps_what_was_there(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.write("files/t/f", [b"first"])

    def failing():
        yield bytes(2 * 1024 * 1024)
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        storage.write("files/t/f", failing())
    assert (tmp_path / "files/t/f").read_bytes() == b"first"
    assert files_in(tmp_path) == {Path("files/t/f")}
