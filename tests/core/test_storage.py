"""Both storages, a local folder and an S3 bucket (moto's server), keep the same promises: writes are
atomic, with the size and sha256 of what was stored, from chunks of any bytes-like kind; a write that fails
or goes past its limit leaves nothing behind (no partial file, no multipart upload in progress); reads seek
anywhere; a folder's objects are deleted and fetched together."""

import hashlib
import os

import pytest

from core.resources import make_storage
from core.s3_storage import PART_BYTES
from core.storage import TooLarge
from tests.storages import stored_keys

MiB = 1024 * 1024


def in_chunks(data: bytes, size: int):
    return (memoryview(data)[i : i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize(
    "size", [0, 1000, PART_BYTES, 2 * PART_BYTES + 3], ids=["empty", "small", "one part", "parts"]
)
def test_write_stores_the_chunks_with_their_size_and_sha256(storage, size):
    data = os.urandom(size)
    stored = storage.write("files/t/f", in_chunks(data, 300_000))
    assert (stored.bytes, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    with storage.open("files/t/f") as stream:
        assert stream.read() == data
    assert stored_keys(storage) == {"files/t/f"}


@pytest.mark.parametrize("first", [600, PART_BYTES + 600], ids=["small", "past a part"])
def test_write_past_the_limit_stores_nothing(storage, first):
    with pytest.raises(TooLarge):
        storage.write("files/t/f", [bytes(first), bytes(600)], max_bytes=first + 500)
    assert stored_keys(storage) == set()


def test_a_failing_stream_stores_nothing_and_keeps_what_was_there(storage):
    storage.write("files/t/f", [b"first"])

    def failing():
        yield bytes(PART_BYTES + 1)  # a part uploaded before the failure
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        storage.write("files/t/f", failing())
    with storage.open("files/t/f") as stream:
        assert stream.read() == b"first"
    assert stored_keys(storage) == {"files/t/f"}


def test_reads_seek_anywhere(storage):
    data = os.urandom(3 * MiB + 7)
    storage.write("f", [data])
    with storage.open("f") as stream:
        assert stream.seek(0, os.SEEK_END) == len(data)
        stream.seek(len(data) - 5)
        assert stream.read() == data[-5:]
        stream.seek(10)
        assert stream.read(4) == data[10:14] and stream.tell() == 14
        assert stream.readline() == data[14 : data.index(b"\n", 14) + 1]
        stream.seek(MiB)
        assert stream.read(2 * MiB) == data[MiB : 3 * MiB]


def test_opening_what_is_not_there_is_file_not_found(storage):
    with pytest.raises(FileNotFoundError):
        storage.open("files/t/none")


def test_delete_takes_an_object_or_a_folder(storage):
    for key in ("caches/t/a/x", "caches/t/a/y", "caches/t/a/sub/z", "caches/t/ab", "files/t/f"):
        storage.write(key, [key.encode()])
    storage.delete("caches/t/a")
    assert stored_keys(storage) == {"caches/t/ab", "files/t/f"}
    storage.delete("files/t/f")
    storage.delete("files/t/none")
    assert stored_keys(storage) == {"caches/t/ab"}


def test_local_path_of_an_object_a_folder_and_nothing(storage):
    storage.write("files/t/f", [b"the bytes"])
    storage.write("caches/t/a/x", [b"x"])
    storage.write("caches/t/a/sub/y", [b"y"])
    with storage.local_path("files/t/f") as path:
        assert path.read_bytes() == b"the bytes"
    with storage.local_path("caches/t/a") as folder:
        files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        assert files == {"x": b"x", "sub/y": b"y"}
    with storage.local_path("caches/t/none") as path:
        assert not path.exists()


@pytest.mark.s3
def test_an_s3_read_asks_for_the_bytes_it_reads_not_the_whole_object(s3_url):
    storage = make_storage(s3_url)
    storage.write("f", [os.urandom(40 * MiB)])
    ranges = []
    storage.client.meta.events.register(
        "before-call.s3.GetObject", lambda params, **_: ranges.append(params["headers"].get("Range"))
    )
    with storage.open("f") as stream:
        stream.seek(30 * MiB)
        stream.read(8)
    (asked,) = ranges
    first, last = map(int, asked.removeprefix("bytes=").split("-"))
    assert first == 30 * MiB and last - first < MiB


@pytest.mark.s3
def test_a_failed_s3_write_aborts_its_multipart_upload(s3_url, monkeypatch):
    storage = make_storage(s3_url)

    def refused(**_):
        raise ConnectionResetError

    monkeypatch.setattr(storage.client, "complete_multipart_upload", refused)
    with pytest.raises(ConnectionResetError):
        storage.write("f", [bytes(2 * PART_BYTES)])
    assert stored_keys(storage) == set()
