"""The storage in an S3-compatible bucket (AWS S3, MinIO, Ceph, Cloudflare R2, ...): `s3://bucket/prefix`.

boto3 finds the endpoint, region and credentials as every AWS tool does: AWS_ENDPOINT_URL,
AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE, ~/.aws/config, an
instance role. Writes stream as multipart uploads of PART_BYTES parts (one PUT for a smaller object), so an
upload holds one part in memory whatever its size; reads are ranged GETs.
"""

import functools
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from core.storage import HashedChunks, StorageUnavailable, StoredObject

MiB = 1024 * 1024
# S3's parts are 5 MiB at least (all but the last) and 10,000 at most: an object of up to 78 GiB.
PART_BYTES = 8 * MiB
# A read after a seek asks for FIRST_GET_BYTES, and each sequential read after it for twice as many as the
# last, up to LAST_GET_BYTES: a header costs one small GET, a download few large ones.
FIRST_GET_BYTES = 256 * 1024
LAST_GET_BYTES = 16 * MiB
READ_BUFFER_BYTES = 64 * 1024
PRESIGNED_SECONDS = 15 * 60
CLIENT_CONFIG = Config(
    signature_version="s3v4",  # what every region and S3-compatible server accepts, presigned URLs too
    connect_timeout=5,
    read_timeout=60,
    retries={"mode": "standard", "max_attempts": 3},
)
NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
REFUSED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def _bucket_failures_unavailable(method):
    """`method`, raising StorageUnavailable (which says what to check) when the bucket, not an object,
    failed: the API answers 503, as /readyz does, rather than a 500 per request."""

    @functools.wraps(method)
    def reporting(self: "S3Storage", *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            problem = self._bucket_problem(exc, missing={"NoSuchBucket"})
            if problem is None:
                raise
            raise StorageUnavailable(problem) from exc

    return reporting


class S3Storage:
    def __init__(self, bucket: str, prefix: str = ""):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._client, self._client_pid = None, None

    @classmethod
    def from_url(cls, url: str) -> "S3Storage":
        parts = urlsplit(url)
        return cls(parts.netloc, parts.path)

    @property
    def client(self):
        """This process's client: a worker's forked children must not share its pooled connections."""
        if self._client_pid != os.getpid():
            self._client, self._client_pid = boto3.client("s3", config=CLIENT_CONFIG), os.getpid()
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @_bucket_failures_unavailable
    def write(self, key: str, chunks: Iterable[bytes], max_bytes: int | None = None) -> StoredObject:
        hashed, target = HashedChunks(chunks, max_bytes), {"Bucket": self.bucket, "Key": self._key(key)}
        upload = MultipartUpload(self.client, target)
        try:
            for part in _parts(hashed):
                if not upload.begun and len(part) < PART_BYTES:  # the first part is the last: one PUT
                    self.client.put_object(**target, Body=part)
                elif part:
                    upload.add(part)
                del part  # not held while the next one fills: one part in memory, not two
            upload.complete()
        except BaseException:
            upload.abort()
            raise
        return hashed.stored()

    @_bucket_failures_unavailable
    def open(self, key: str) -> BinaryIO:
        return io.BufferedReader(RangedReader(self.client, self.bucket, self._key(key)), READ_BUFFER_BYTES)

    @_bucket_failures_unavailable
    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        for page in self._pages_under(self._key(key) + "/"):
            if "Contents" in page:
                self._delete_listed(page["Contents"])

    def _delete_listed(self, listed: list[dict]) -> None:
        objects = {"Objects": [{"Key": item["Key"]} for item in listed], "Quiet": True}
        errors = self.client.delete_objects(Bucket=self.bucket, Delete=objects).get("Errors", [])
        if errors:  # the batch answers 200 whatever it could not delete
            raise OSError(f"s3://{self.bucket}/{errors[0]['Key']} was not deleted: {errors[0]['Message']}")

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="distill-s3-") as folder:
            target = Path(folder) / PurePosixPath(key).name
            self._download(self._key(key), target)
            yield target

    @_bucket_failures_unavailable
    def _download(self, key: str, target: Path) -> None:
        """The object `key` into the file `target`, or the objects under `key/` into the folder."""
        try:
            self.client.download_file(self.bucket, key, str(target))
            return
        except ClientError as exc:
            if _code(exc) not in NOT_FOUND:
                raise
        for page in self._pages_under(key + "/"):
            for listed in page.get("Contents", []):
                path = target / listed["Key"].removeprefix(key + "/")
                path.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(self.bucket, listed["Key"], str(path))

    def _pages_under(self, prefix: str) -> Iterator[dict]:
        return self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)

    def download_url(self, key: str, content_type: str, content_disposition: str) -> str:
        params = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "ResponseContentType": content_type,
            "ResponseContentDisposition": content_disposition,
        }
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=PRESIGNED_SECONDS)

    def problem(self) -> str | None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            found = self._bucket_problem(exc, missing=NOT_FOUND)  # HEAD answers carry no error code
            return (
                found or f"{self._bucket} answers {_code(exc)}: check AWS_ENDPOINT_URL and AWS_DEFAULT_REGION"
            )
        return None

    @property
    def _bucket(self) -> str:
        return f"bucket {self.bucket!r} at {self.client.meta.endpoint_url}"

    def _bucket_problem(self, exc: Exception, missing: set[str]) -> str | None:
        """What to check when `exc` says the bucket cannot be used; None when it is about one object."""
        if isinstance(exc, NoCredentialsError):
            return "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        if isinstance(exc, BotoCoreError):  # the endpoint cannot be reached, or answers nonsense
            return f"{self._bucket} cannot be used ({exc}): check AWS_ENDPOINT_URL"
        code = _code(exc)
        if code in missing:
            return (
                f"{self._bucket} does not exist: create it, or check DISTILL_STORAGE_URL and AWS_ENDPOINT_URL"
            )
        if code in REFUSED:
            return (
                f"{self._bucket} refuses access ({code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE) and the bucket's policy"
            )
        return None


def _parts(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The bytes regrouped into parts of PART_BYTES, then the rest (maybe empty)."""
    pending: list[memoryview] = []
    size = 0
    for chunk in chunks:
        view = memoryview(chunk)
        while size + len(view) >= PART_BYTES:
            pending.append(view[: PART_BYTES - size])
            view, size = view[PART_BYTES - size :], 0
            yield _joined(pending)
        if view:
            pending.append(view)
            size += len(view)
    yield _joined(pending)


def _joined(pending: list[memoryview]) -> bytes:
    """The views' bytes as one; the list is emptied, so that their chunks are not kept beside the part."""
    part = b"".join(pending)
    pending.clear()
    return part


class MultipartUpload:
    """An object uploaded part by part, begun at the first part; it appears whole once `complete`, or not
    at all: `abort` drops the parts uploaded."""

    def __init__(self, client, target: dict[str, str]):
        self.client, self.target = client, target  # its Bucket and Key
        self.upload_id: str | None = None
        self.parts: list[dict] = []

    @property
    def begun(self) -> bool:
        return self.upload_id is not None

    def add(self, part: bytes) -> None:
        if not self.begun:
            self.upload_id = self.client.create_multipart_upload(**self.target)["UploadId"]
        number = len(self.parts) + 1
        answer = self.client.upload_part(**self.target, UploadId=self.upload_id, PartNumber=number, Body=part)
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def complete(self) -> None:
        if self.begun:
            self.client.complete_multipart_upload(
                **self.target, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
            )

    def abort(self) -> None:
        if self.begun:
            with suppress(Exception):  # what stopped the upload is the error to raise, not a failed abort
                self.client.abort_multipart_upload(**self.target, UploadId=self.upload_id)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class RangedReader(io.RawIOBase):
    """An object read by ranged GETs from where the reader is; a seek costs nothing until the next read."""

    def __init__(self, client, bucket: str, key: str):
        self.client, self.bucket, self.key = client, bucket, key
        try:
            self.size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except ClientError as exc:
            if _code(exc) in NOT_FOUND:
                raise FileNotFoundError(f"s3://{bucket}/{key}") from None
            raise
        self.position, self._get_bytes = 0, FIRST_GET_BYTES
        self._body, self._body_end = None, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        origin = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if origin + offset < 0:
            raise ValueError(f"negative seek position {origin + offset}")
        if origin + offset != self.position:
            self._drop_body()
            self.position, self._get_bytes = origin + offset, FIRST_GET_BYTES
        return self.position

    def readinto(self, buffer) -> int:
        if self.position >= self.size:
            return 0
        if self._body is None:
            self._get(len(buffer))
        data = self._body.read(min(len(buffer), self._body_end - self.position))
        if not data:
            raise OSError(f"s3://{self.bucket}/{self.key}: the GET ended at byte {self.position}")
        buffer[: len(data)] = data
        self.position += len(data)
        if self.position == self._body_end:
            self._drop_body()
        return len(data)

    def _get(self, wanted: int) -> None:
        self._body_end = min(self.size, self.position + max(wanted, self._get_bytes))
        self._get_bytes = min(2 * self._get_bytes, LAST_GET_BYTES)
        byte_range = f"bytes={self.position}-{self._body_end - 1}"
        self._body = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=byte_range)["Body"]

    def _drop_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop_body()
        super().close()
