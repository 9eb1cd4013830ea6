from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import lifecycle
from core.checkpoint_store import StoredCheckpoint
from core.db import Database
from core.errors import RequestError, not_found
from core.job_request import JobCreate
from core.lifecycle import add_event
from core.models import Artifact, File, Job, JobEvent, JobFile, JobMetric
from core.queue import JobQueue
from core.request_rules import ResolvedJob, check_resumable, resolve_job
from core.storage import Storage
from service import idempotency, job_reads, tenant_quotas
from service.deps import DatabaseDep, KeptBodiesDep, QueueDep, SettingsDep, StorageDep, TenantDep
from service.downloads import DownloaderDep, StoredObject, download_route
from service.errors import ErrorBody
from service.event_stream import job_event_stream
from service.job_reads import job_object
from service.pagination import After, Limit, paginate
from service.reads import read
from service.responses import json_response
from service.schemas import (
    ArtifactObject,
    EventObject,
    JobObject,
    MetricList,
    MetricPoint,
    Page,
    Progress,
)
from service.tenancy import get_owned, owned_by

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses={401: {"model": ErrorBody}})
ERRORS = {code: {"model": ErrorBody} for code in (404, 409, 422)}
KeyedPostDep = idempotency.keyed_post("POST /v1/jobs")


@router.post(
    "",
    status_code=201,
    response_model=JobObject,
    responses={**ERRORS, 429: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def create_job(
    body: JobCreate,
    database: DatabaseDep,
    settings: SettingsDep,
    queue: QueueDep,
    storage: StorageDep,
    post: KeyedPostDep,
):
    tenant_id = post.tenant_id
    request_hash = idempotency.fingerprint(body.model_dump(mode="json"))
    with database.sessions() as session:
        replayed = post.replay(session, request_hash)
    if replayed is not None:
        return replayed
    # Resolving may count a transformers model in a child process for seconds: it holds no connection.
    resolved = resolve_job(body, lambda file_id: _owned_file(database, tenant_id, file_id), settings)
    with database.sessions() as session:
        if body.resume_from is not None:
            _check_resumable(session, storage, tenant_id, resolved.request)
        job = _new_job(tenant_id, resolved)
        session.add(job)
        session.flush()
        tenant_quotas.check_job_slots(session, settings, tenant_id)
        add_event(session, job.pk, "Job created and queued.")
        response = job_object(job, job.artifacts).model_dump(mode="json")
        won = post.commit_remembered(session, request_hash, response)
        if won is not None:  # a concurrent request with the same key made the job
            return won
        _enqueue(session, queue, job)
    return response


def _new_job(tenant_id: str, resolved: ResolvedJob) -> Job:
    request = resolved.request
    return Job(
        tenant_id=tenant_id,
        name=request.name,
        request=request.model_dump(mode="json"),
        progress=Progress(epochs=request.training.epochs).model_dump(),
        files=[JobFile(file_id=file_id, role=role) for file_id, role in resolved.file_roles.items()],
    )


def _check_resumable(session: Session, storage: Storage, tenant_id: str, request: JobCreate) -> None:
    earlier = session.scalar(owned_by(Job, tenant_id).where(Job.id == request.resume_from))
    kept = earlier is not None and StoredCheckpoint(storage, tenant_id, earlier.id).kept()
    check_resumable(request, earlier, checkpoint_kept=kept)


def _owned_file(database: Database, tenant_id: str, file_id: str) -> File | None:
    with database.sessions() as session:
        return session.scalar(owned_by(File, tenant_id).where(File.id == file_id))


def _enqueue(session: Session, queue: JobQueue, job: Job) -> None:
    try:
        queue.enqueue(job.id)
    except Exception as exc:  # the broker is down: the job must not sit in `queued` forever
        error = {
            "code": "queue_unavailable",
            "message": f"The job queue did not accept the job ({exc}). Retry.",
        }
        lifecycle.move(session, job.id, lifecycle.NOT_QUEUED, error=error)
        add_event(session, job.pk, error["message"], "error")
        session.commit()
        raise RequestError(503, "queue_unavailable", error["message"]) from None


@router.get("", response_model=Page[JobObject], responses=ERRORS)
async def list_jobs(
    database: DatabaseDep,
    kept: KeptBodiesDep,
    tenant_id: TenantDep,
    limit: Limit = 20,
    after: After = None,
    status: lifecycle.Status | None = None,
):
    return json_response(await read(database, job_reads.page_body, kept, tenant_id, status, after, limit))


@router.get("/{job_id}", response_model=JobObject, responses=ERRORS)
async def retrieve_job(job_id: str, database: DatabaseDep, kept: KeptBodiesDep, tenant_id: TenantDep):
    return json_response(await read(database, job_reads.job_body, kept, tenant_id, job_id))


@router.post("/{job_id}/cancel", response_model=JobObject, responses=ERRORS)
def cancel_job(job_id: str, database: DatabaseDep, storage: StorageDep, tenant_id: TenantDep):
    with database.sessions() as session:
        job = get_owned(session, Job, tenant_id, job_id)
        cancelled_in_queue = lifecycle.move(session, job.id, lifecycle.CANCEL_QUEUED)
        if cancelled_in_queue:
            add_event(session, job.pk, "Job cancelled before it started.")
        elif lifecycle.move(session, job.id, lifecycle.REQUEST_CANCEL):
            add_event(session, job.pk, "Cancellation requested; the worker stops at its next training step.")
        elif job.status != "cancelling":
            message = f"Job {job_id} has already {job.status}; nothing to cancel."
            raise RequestError(409, "job_not_cancellable", message)
        session.commit()
        if cancelled_in_queue:  # a job re-queued after a lost worker may have saved a checkpoint
            StoredCheckpoint(storage, job.tenant_id, job.id).delete()
        session.refresh(job)
        return job_object(job, job.artifacts)


@router.get(
    "/{job_id}/events",
    response_model=Page[EventObject],
    responses={
        **ERRORS,
        200: {
            "description": "The events; with `Accept: text/event-stream`, a live stream of `job.event` "
            "messages until the job ends, then one `end` message whose data is how it ended "
            '(`{"status": "succeeded", "error": null}`). Resumes after `Last-Event-ID`.',
            "content": {"text/event-stream": {}},
        },
    },
)
def list_events(
    job_id: str,
    request: Request,
    database: DatabaseDep,
    tenant_id: TenantDep,
    limit: Limit = 100,
    after: After = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
):
    with database.sessions() as session:
        job = get_owned(session, Job, tenant_id, job_id)
        if "text/event-stream" in request.headers.get("accept", ""):
            resume = session.scalar(
                select(JobEvent.pk).where(JobEvent.job_pk == job.pk, JobEvent.id == (last_event_id or after))
            )
            stream = job_event_stream(database.sessions, job.pk, resume or 0)
            return StreamingResponse(
                stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        query = select(JobEvent).where(JobEvent.job_pk == job.pk)
        rows, has_more = paginate(session, query, JobEvent, after, limit, newest_first=False)
    events = [EventObject(id=e.id, created_at=e.created_at, level=e.level, message=e.message) for e in rows]
    return Page[EventObject](data=events, has_more=has_more)


@router.get("/{job_id}/metrics", response_model=MetricList, responses=ERRORS)
def list_metrics(job_id: str, database: DatabaseDep, tenant_id: TenantDep, name: str | None = None):
    with database.sessions() as session:
        job = get_owned(session, Job, tenant_id, job_id)
        query = select(JobMetric).where(JobMetric.job_pk == job.pk)
        if name is not None:
            query = query.where(JobMetric.name == name)
        rows = session.scalars(query.order_by(JobMetric.step, JobMetric.pk)).all()
    return MetricList(
        data=[MetricPoint(step=m.step, epoch=m.epoch, name=m.name, value=m.value) for m in rows]
    )


@router.get("/{job_id}/artifacts", response_model=Page[ArtifactObject], responses=ERRORS)
def list_artifacts(job_id: str, database: DatabaseDep, tenant_id: TenantDep):
    with database.sessions() as session:
        job = get_owned(session, Job, tenant_id, job_id)
    artifacts = [
        ArtifactObject(name=a.name, bytes=a.bytes, sha256=a.sha256, content_type=a.content_type)
        for a in job.artifacts
    ]
    return Page[ArtifactObject](data=artifacts)


@download_route(router, "/{job_id}/artifacts/{name}", ERRORS)
def download_artifact(
    job_id: str, name: str, database: DatabaseDep, downloader: DownloaderDep, tenant_id: TenantDep
):
    with database.sessions() as session:
        job = get_owned(session, Job, tenant_id, job_id)
        artifact = session.scalar(select(Artifact).where(Artifact.job_pk == job.pk, Artifact.name == name))
    if artifact is None:
        raise not_found("artifact", name)
    stored = StoredObject(
        key=artifact.storage_key,
        size=artifact.bytes,
        sha256=artifact.sha256,
        content_type=artifact.content_type,
        filename=artifact.name,
    )
    return downloader.answer(stored)
