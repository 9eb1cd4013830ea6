import re
import unicodedata

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from core import teacher_cache_store
from core.errors import RequestError, unprocessable
from core.lifecycle import UNFINISHED
from core.media_types import media_type
from core.models import File as FileRow
from core.models import Job, JobFile, new_id
from core.request_rules import pt2_not_allowed
from core.storage import TooLarge
from service import file_reads, idempotency, tenant_quotas
from service.body_limits import upload_too_large
from service.deps import DatabaseDep, KeptBodiesDep, SettingsDep, StorageDep, TenantDep
from service.downloads import DownloaderDep, StoredObject, download_route
from service.errors import STORAGE_UNAVAILABLE, ErrorBody
from service.pagination import After, Limit
from service.reads import read
from service.responses import json_response
from service.schemas import DeletedObject, FileObject, Page, Purpose, UploadForm
from service.tenancy import get_owned
from service.upload_formats import UploadRejected, detect_format
from service.upload_stream import Upload, receive_upload

router = APIRouter(prefix="/v1/files", tags=["files"], responses={401: {"model": ErrorBody}})
KeyedPostDep = idempotency.keyed_post("POST /v1/files")
ERRORS = {code: {"model": ErrorBody} for code in (404, 409, 413, 422)}
INVISIBLE = {"Cc", "Cf", "Zl", "Zp"}  # Unicode categories a file name must not carry


def safe_filename(name: str | None) -> str:
    """The base name, without quotes and invisible characters: controls (C0, C1), format characters (the
    bidirectional overrides that make `invoice\u202egpj.npz` read as a `.jpg`, zero-width marks) and line
    separators."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = "".join(c for c in base if c != '"' and unicodedata.category(c) not in INVISIBLE)
    return base.strip().lstrip(".")[:255] or "upload"


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": UploadForm.model_json_schema()}},
    }
}  # documented here: the route reads the body itself (FastAPI would spool the whole file to disk first)


# The file's bytes stream from the request body into storage (`receive_upload`); the database work before
# and after runs on threads, each with its own session, none held while the bytes stream. (No docstring: it
# would become the operation's description in the OpenAPI document.)
@router.post(
    "",
    status_code=201,
    response_model=FileObject,
    responses={**ERRORS, **STORAGE_UNAVAILABLE},
    openapi_extra=UPLOAD_BODY,
)
async def upload_file(
    request: Request, database: DatabaseDep, storage: StorageDep, settings: SettingsDep, post: KeyedPostDep
):
    file_id = new_id("file")
    key = f"files/{post.tenant_id}/{file_id}"
    room = await run_in_threadpool(_room_for_upload, database, settings, post)
    upload = await _receive_upload(request, storage, key, settings.max_upload_bytes, room)
    return await run_in_threadpool(
        _record_upload, database, storage, settings, post, file_id=file_id, key=key, upload=upload
    )


def _room_for_upload(database, settings, post: idempotency.KeyedPost) -> tenant_quotas.Room | None:
    """The tenant's room left (None: no quota, or a retry that will replay its first answer)."""
    with database.sessions() as session:
        if post.answered(session):
            return None
        return tenant_quotas.room_for_upload(session, settings, post.tenant_id)


async def _receive_upload(
    request: Request, storage, key: str, limit: int, room: tenant_quotas.Room | None
) -> Upload:
    """Store the upload, stopping (and storing nothing) past the size limit or the tenant's room left."""
    try:
        return await receive_upload(request, storage, key, limit if room is None else min(limit, room.left))
    except TooLarge:
        if room is not None and room.left < limit:
            raise tenant_quotas.storage_quota_exceeded(room.quota, room.used) from None
        raise upload_too_large(limit) from None


def _record_upload(
    database, storage, settings, post: idempotency.KeyedPost, *, file_id: str, key: str, upload: Upload
):
    """Check the stored file's format and record it, or replay the key's first answer; a refused file is
    deleted."""
    purpose, stored = upload.purpose, upload.stored
    filename = safe_filename(upload.filename)
    request_hash = idempotency.fingerprint(purpose, filename, stored.sha256)
    with database.sessions() as session:
        try:
            replayed = post.replay(session, request_hash)
            if replayed is not None:
                storage.delete(key)
                return replayed
            with storage.open(key) as stream:  # read where the checks need: headers, in a bucket too
                detected = detect_format(purpose, stream, settings)
            if detected.format == "pt2" and not settings.pt2_allowed:
                raise pt2_not_allowed(settings, "file")
        except Exception as exc:  # whatever went wrong, the upload must not stay behind in the store
            storage.delete(key)
            if isinstance(exc, UploadRejected):
                message = f"Rejected {purpose} file {filename!r}: {exc}"
                raise unprocessable("invalid_file", message, param="file") from None
            raise
        row = FileRow(
            id=file_id,
            tenant_id=post.tenant_id,
            purpose=purpose,
            filename=filename,
            format=detected.format,
            samples=detected.samples,
            details=detected.details,
            bytes=stored.bytes,
            sha256=stored.sha256,
            storage_key=key,
        )
        session.add(row)
        session.flush()
        try:  # concurrent uploads may have filled the quota
            tenant_quotas.check_stored_bytes(session, settings, post.tenant_id)
        except RequestError:
            storage.delete(key)
            raise
        body = FileObject.of(row)
        won = post.commit_remembered(session, request_hash, body.model_dump(mode="json"))
        if won is not None:  # a concurrent request with the same key stored its file
            storage.delete(key)
            return won
        return body


@router.get("", response_model=Page[FileObject], responses=ERRORS)
async def list_files(
    database: DatabaseDep,
    kept: KeptBodiesDep,
    tenant_id: TenantDep,
    limit: Limit = 20,
    after: After = None,
    purpose: Purpose | None = None,
):
    return json_response(await read(database, file_reads.page_body, kept, tenant_id, purpose, after, limit))


@router.get("/{file_id}", response_model=FileObject, responses=ERRORS)
async def retrieve_file(file_id: str, database: DatabaseDep, kept: KeptBodiesDep, tenant_id: TenantDep):
    return json_response(await read(database, file_reads.file_body, kept, tenant_id, file_id))


@download_route(router, "/{file_id}/content", ERRORS)
def download_file(file_id: str, database: DatabaseDep, downloader: DownloaderDep, tenant_id: TenantDep):
    with database.sessions() as session:
        row = get_owned(session, FileRow, tenant_id, file_id)
    stored = StoredObject(
        key=row.storage_key,
        size=row.bytes,
        sha256=row.sha256,
        content_type=media_type(row.format),
        filename=row.filename,
    )
    return downloader.answer(stored)


@router.delete("/{file_id}", response_model=DeletedObject, responses={**ERRORS, **STORAGE_UNAVAILABLE})
def delete_file(file_id: str, database: DatabaseDep, storage: StorageDep, tenant_id: TenantDep):
    with database.sessions() as session:
        row = get_owned(session, FileRow, tenant_id, file_id)
        users = session.scalars(
            select(Job.id).join(JobFile).where(JobFile.file_id == row.id, Job.status.in_(UNFINISHED))
        ).all()
        if users:
            message = f"File {file_id} is used by unfinished job(s) {', '.join(users)}."
            raise RequestError(409, "file_in_use", message)
        session.delete(row)
        cached = teacher_cache_store.forget_file(session, row.id)  # teacher outputs computed from it
        session.commit()
    storage.delete(row.storage_key)
    teacher_cache_store.delete_folders(storage, cached)
    return DeletedObject(id=file_id, object="file")
