"""Downloads of stored objects with `ETag` (the sha256), `Range` and `If-None-Match`: a local file
sent as a file (`FileSpanResponse`), a bucket's object streamed, or with DISTILL_S3_PRESIGN a redirect
to the bucket."""

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, BinaryIO
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from core.storage import Storage, read_chunks
from service.deps import SettingsDep, StorageDep
from service.errors import STORAGE_UNAVAILABLE, ErrorBody, error_response
from service.file_span import FileSpanResponse
from service.head_routes import add_head_route

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

# The bytes go out with the stored object's content type: `npz`/`pt2` are zips, `json` is JSON.
_BYTES: dict = {"application/octet-stream": {}, "application/zip": {}, "application/json": {}}
DOWNLOAD_RESPONSES = {
    200: {
        "description": "The bytes, streamed, with `Content-Length`, `ETag` (the sha256) and "
        "`Accept-Ranges: bytes`. A `Range: bytes=…` header asks for part of them.",
        "content": _BYTES,
    },
    206: {
        "description": "The single byte range that `Range` asked for (and `If-Range`, if sent, "
        "still names the current ETag); `Content-Range` says which bytes.",
        "content": _BYTES,
    },
    304: {"description": "Not modified: `If-None-Match` names the current ETag."},
    307: {
        "description": "Only with DISTILL_S3_PRESIGN on (an s3:// storage): `Location` is a presigned URL "
        "of the object in the bucket, valid 15 minutes, that answers the GET (with `Range`) without a key. "
        "`HEAD` and `If-None-Match` are still answered here.",
        "headers": {"Location": {"description": "The presigned URL.", "schema": {"type": "string"}}},
    },
    416: {"model": ErrorBody, "description": "`Range` is not a satisfiable single byte range."},
    **STORAGE_UNAVAILABLE,
}


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive byte span of a single-range `Range` header; None if it cannot be satisfied."""
    match = RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        start, end = max(size - _position(last), 0), size - 1
    else:
        start, end = _position(first), min(_position(last), size - 1) if last else size - 1
    return (start, end) if start <= end and start < size else None


def _position(digits: str) -> int:
    """A byte position; one of more digits than any object's size has (CPython refuses to convert more
    than 4,300) is past the end."""
    return int(digits) if len(digits) <= 18 else 10**18


@dataclass(frozen=True)
class StoredObject:
    """What a download serves: the object at `key` in storage, and how it is described."""

    key: str
    size: int
    sha256: str
    content_type: str
    filename: str


@dataclass(frozen=True)
class Downloader:
    """Answers a download route's request (`DownloaderDep`)."""

    request: Request
    storage: Storage
    presign: bool  # DISTILL_S3_PRESIGN

    def answer(self, stored: StoredObject) -> Response:
        """The object's bytes (or a 304, 206, 416), or with `presign` a GET's redirect to them in the
        bucket."""
        request, size = self.request, stored.size
        etag = f'"{stored.sha256}"'
        headers = {
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Content-Disposition": _content_disposition(stored.filename),
        }
        if _etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        # A HEAD is answered here: a presigned URL signs one method.
        if self.presign and request.method == "GET":
            url = self.storage.download_url(stored.key, stored.content_type, headers["Content-Disposition"])
            return RedirectResponse(url, status_code=307, headers={"ETag": etag})
        range_header = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if not _single_byte_range(range_header) or (if_range is not None and if_range != etag):
            return self._stream(stored, headers, start=0, length=size, status=200)
        span = parse_range(range_header, size)
        if span is None:
            return error_response(
                416,
                "range_not_satisfiable",
                f"Range {range_header!r} is not a single satisfiable byte range of this {size}-byte object.",
                param="Range",
                headers={"Content-Range": f"bytes */{size}"},
            )
        start, end = span
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return self._stream(stored, headers, start=start, length=end - start + 1, status=206)

    def _stream(self, stored: StoredObject, headers: dict, *, start: int, length: int, status: int):
        headers = {**headers, "Content-Length": str(length)}
        media_type = stored.content_type
        if self.request.method == "HEAD":  # the headers a GET would get, without reading the object
            return Response(status_code=status, media_type=media_type, headers=headers)

        # Opened before the answer starts: a storage that fails is still a 503, and a file replaced
        # meanwhile still sends the bytes its ETag names.
        stream = self.storage.open(stored.key)
        if _on_local_disk(stream):
            return FileSpanResponse(
                stream, start=start, length=length, status_code=status, media_type=media_type, headers=headers
            )

        def body():
            with stream:
                yield from read_chunks(stream, start, length)

        return StreamingResponse(body(), status_code=status, media_type=media_type, headers=headers)


async def get_downloader(request: Request, storage: StorageDep, settings: SettingsDep) -> Downloader:
    return Downloader(request, storage, settings.s3_presign)


DownloaderDep = Annotated[Downloader, Depends(get_downloader)]


def download_route(router: APIRouter, path: str, errors: dict) -> Callable[[Callable], Callable]:
    """Declares the decorated endpoint the GET and the HEAD of `path`, answered by a `Downloader`."""
    options = {"response_class": StreamingResponse, "responses": {**errors, **DOWNLOAD_RESPONSES}}

    def declare(endpoint: Callable) -> Callable:
        router.add_api_route(path, endpoint, methods=["GET"], **options)
        add_head_route(router, path, endpoint, **options)
        return endpoint

    return declare


def _on_local_disk(stream: BinaryIO) -> bool:
    """Whether the stream reads a file of this machine (a `LocalStorage` object's), not a bucket's."""
    try:
        stream.fileno()
    except (AttributeError, io.UnsupportedOperation):
        return False
    return True


def _single_byte_range(header: str | None) -> bool:
    """Other units and multiple ranges are ignored (RFC 9110 §14.2): the whole object is sent."""
    return header is not None and header.strip().startswith("bytes=") and "," not in header


def _content_disposition(filename: str) -> str:
    """Headers are latin-1: a non-ASCII name goes in `filename*` (RFC 6266), with an ASCII fallback."""
    ascii_name = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    if ascii_name == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """`If-None-Match` is a list of tags, compared weakly (RFC 9110 13.1.2)."""
    if if_none_match is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags
