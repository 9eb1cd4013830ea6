"""Where file and artifact bytes live. One small interface; local disk today, S3-compatible later."""

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

CHUNK_BYTES = 1024 * 1024


class TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class StoredObject:
    bytes: int
    sha256: str


class Storage(Protocol):
    def write(self, key: str, chunks: Iterable[bytes], max_bytes: int | None = None) -> StoredObject:
        """Store the chunks under `key`, atomically; raise TooLarge (storing nothing) past `max_bytes`."""

    def open(self, key: str) -> BinaryIO:
        """A seekable binary reader."""

    def delete(self, key: str) -> None: ...

    def local_path(self, key: str) -> "contextmanager[Path]":
        """A context manager giving a path on local disk that holds the object's bytes."""


def read_chunks(stream: BinaryIO, start: int = 0, length: int | None = None) -> Iterator[bytes]:
    stream.seek(start)
    remaining = length
    while remaining is None or remaining > 0:
        chunk = stream.read(CHUNK_BYTES if remaining is None else min(CHUNK_BYTES, remaining))
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


class LocalStorage:
    def __init__(self, root: Path):
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return path

    def write(self, key: str, chunks: Iterable[bytes], max_bytes: int | None = None) -> StoredObject:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise TooLarge(max_bytes)
                    digest.update(chunk)
                    out.write(chunk)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return StoredObject(bytes=size, sha256=digest.hexdigest())

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        yield self._path(key)


def job_key(tenant_id: str, job_id: str, name: str) -> str:
    """Where a job's objects live: its artifacts (`name` = `attempt-<n>/<artifact>`) and, while it is
    unfinished, its checkpoint."""
    return f"jobs/{tenant_id}/{job_id}/{name}"


def make_storage(url: str) -> Storage:
    """The storage at `url`: a local folder (the settings refuse other URLs until they are served)."""
    return LocalStorage(Path(url))
