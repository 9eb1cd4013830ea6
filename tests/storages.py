"""What a storage holds, local folder or bucket alike: the tests' view of it."""

from core.s3_storage import S3Storage
from core.storage import LocalStorage, Storage


def stored_keys(storage: Storage) -> set[str]:
    """The keys of every object stored, partial ones too (a local `.partial-` file, an S3 upload in
    progress)."""
    if isinstance(storage, LocalStorage):
        root = storage.root
        return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}
    return _s3_keys(storage) | {f"{key} (upload in progress)" for key in _s3_uploads(storage)}


def _s3_keys(storage: S3Storage) -> set[str]:
    pages = storage.client.get_paginator("list_objects_v2").paginate(
        Bucket=storage.bucket, Prefix=storage.prefix + "/"
    )
    return {_relative(storage, listed["Key"]) for page in pages for listed in page.get("Contents", [])}


def _s3_uploads(storage: S3Storage) -> set[str]:
    """The keys of the multipart uploads begun and neither completed nor aborted."""
    listed = storage.client.list_multipart_uploads(Bucket=storage.bucket, Prefix=storage.prefix + "/")
    return {_relative(storage, upload["Key"]) for upload in listed.get("Uploads", [])}


def _relative(storage: S3Storage, key: str) -> str:
    return key.removeprefix(storage.prefix + "/")
