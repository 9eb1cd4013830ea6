"""Where file and artifact bytes live. One small interface: a local folder here, an S3-compatible bucket in
`core/s3_storage.py`; `core.resources.make_storage` picks one by URL."""

import hashlib
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

CHUNK_BYTES = 1024 * 1024
HASH_GROUP_BYTES = 1024 * 1024
HASH_GROUPS_WAITING = 2


class TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


class StorageUnavailable(Exception):
    """The storage cannot be used now (a bucket missing, refusing access, out of reach); the message says
    what to check."""


@dataclass(frozen=True)
class StoredObject:
    bytes: int
    sha256: str


class Storage(Protocol):
    def write(self, key: str, chunks: Iterable[bytes], max_bytes: int | None = None) -> StoredObject:
        """Store the chunks under `key`, atomically; raise TooLarge (storing nothing) past `max_bytes`."""

    def open(self, key: str) -> BinaryIO:
        """A seekable binary reader."""

    def delete(self, key: str) -> None:
        """Delete the object `key`, or every object under the folder `key/`; nothing there is no error."""

    def local_path(self, key: str) -> "contextmanager[Path]":
        """A context manager giving a path on local disk that holds the object's bytes (or, for a folder,
        its files); nothing at `key` gives a path that does not exist."""

    def download_url(self, key: str, content_type: str, content_disposition: str) -> str | None:
        """A URL a client may GET the object from without the API for a while, answered with these headers;
        None where there is none."""

    def problem(self) -> str | None:
        """None when the storage can be used, else what is wrong, for a person to fix."""


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


class HashedChunks:
    """The chunks as they pass, counted, and hashed on a thread of their own while the caller stores
    them (hashlib lets go of the GIL on large buffers); raises TooLarge past `max_bytes`. The chunks
    must not change once passed on (bytes, or views of bytes)."""

    def __init__(self, chunks: Iterable[bytes], max_bytes: int | None):
        self.chunks, self.max_bytes = chunks, max_bytes
        self.size, self.digest = 0, hashlib.sha256()
        self._group: list[bytes] = []  # handed to the thread together: one hand-over per HASH_GROUP_BYTES
        self._group_bytes = 0
        self._hashing: deque[Future] = deque()

    def __iter__(self) -> Iterator[bytes]:
        with ThreadPoolExecutor(1, thread_name_prefix="sha256") as hasher:
            for chunk in self.chunks:
                self.size += len(chunk)
                if self.max_bytes is not None and self.size > self.max_bytes:
                    raise TooLarge(self.max_bytes)
                self._add(hasher, chunk)
                yield chunk
            self._hand_over(hasher)
            self._wait_for_hashing(groups_left=0)

    def _add(self, hasher: ThreadPoolExecutor, chunk: bytes) -> None:
        self._group.append(chunk)
        self._group_bytes += len(chunk)
        if self._group_bytes >= HASH_GROUP_BYTES:
            self._hand_over(hasher)
        self._wait_for_hashing(groups_left=HASH_GROUPS_WAITING)  # the chunks waiting are held

    def _hand_over(self, hasher: ThreadPoolExecutor) -> None:
        group, self._group, self._group_bytes = self._group, [], 0
        self._hashing.append(hasher.submit(_update, self.digest, group))

    def _wait_for_hashing(self, *, groups_left: int) -> None:
        while len(self._hashing) > groups_left:
            self._hashing.popleft().result()

    def stored(self) -> StoredObject:
        return StoredObject(bytes=self.size, sha256=self.digest.hexdigest())


def _update(digest: "hashlib._Hash", chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)


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
        hashed = HashedChunks(chunks, max_bytes)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in hashed:
                    out.write(chunk)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return hashed.stored()

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

    def download_url(self, key: str, content_type: str, content_disposition: str) -> None:
        return None  # the API streams the file itself

    def problem(self) -> str | None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create the storage folder {self.root}: {exc.strerror}"
        if not os.access(self.root, os.W_OK | os.X_OK):
            return f"the storage folder {self.root} is not writable by this process"
        return None


def job_key(tenant_id: str, job_id: str, name: str) -> str:
    """Where a job's objects live: its artifacts (`name` = `attempt-<n>/<artifact>`) and, while it is
    unfinished, its checkpoint."""
    return f"jobs/{tenant_id}/{job_id}/{name}"
