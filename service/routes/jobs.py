from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from engine.design import derive_spec
from engine.errors import DistillError
from engine.layer_map import check_layer_map
from service import idempotency, policy
from service.checkpoints import StoredCheckpoint
from service.config import Settings
from service.db import sessionmaker_for
from service.deps import SessionDep, SettingsDep, StorageDep, TenantDep
from service.downloads import DOWNLOAD_RESPONSES, stream_object
from service.errors import APIError, ErrorBody, not_found
from service.event_stream import job_event_stream
from service.job_state import add_event, transition
from service.models import Artifact, File, Job, JobEvent, JobFile, JobMetric
from service.pagination import After, Limit, paginate
from service.queue import enqueue_job
from service.schemas import (
    ArtifactObject,
    ArtifactRef,
    EventObject,
    JobCreate,
    JobObject,
    JobStatus,
    MetricList,
    MetricPoint,
    Page,
    Progress,
    TeacherRef,
)
from service.tenancy import get_owned, owned_by

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses={401: {"model": ErrorBody}})
ERRORS = {code: {"model": ErrorBody} for code in (404, 409, 422)}


def to_object(job: Job) -> JobObject:
    return JobObject(
        id=job.id, name=job.name, status=job.status, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, request=JobCreate.model_validate(job.request), progress=job.progress,
        metrics=job.metrics, error=job.error,
        artifacts=[ArtifactRef(name=a.name, bytes=a.bytes, sha256=a.sha256) for a in job.artifacts],
    )  # fmt: skip


@router.post(
    "",
    status_code=201,
    response_model=JobObject,
    responses={**ERRORS, 429: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def create_job(
    body: JobCreate,
    session: SessionDep,
    settings: SettingsDep,
    tenant_id: TenantDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
):
    request_hash = idempotency.fingerprint(body.model_dump(mode="json"))
    replayed = idempotency.replay(session, tenant_id, idempotency_key, "POST /v1/jobs", request_hash)
    if replayed is not None:
        return replayed
    files, dataset_formats = _resolve_files(session, settings, tenant_id, body)
    _design_student(body)
    _check_classes(body)
    _check_method(body)
    _check_text_models(body, dataset_formats)
    _check_transformer_distillation(body)
    job = Job(
        tenant_id=tenant_id, name=body.name, request=body.model_dump(mode="json"),
        progress=Progress(epochs=body.training.epochs).model_dump(),
        files=[JobFile(file_id=file_id, role=role) for file_id, role in files.items()],
    )  # fmt: skip
    session.add(job)
    session.flush()
    policy.check_job_slots(session, settings, tenant_id)
    add_event(session, job.pk, "Job created and queued.")
    response = to_object(job).model_dump(mode="json")
    idempotency.remember(session, tenant_id, idempotency_key, "POST /v1/jobs", request_hash, 201, response)
    try:
        session.commit()
    except idempotency.IntegrityError:  # a concurrent request with the same key won
        session.rollback()
        return idempotency.replay(session, tenant_id, idempotency_key, "POST /v1/jobs", request_hash)
    _enqueue(session, job)
    return response


def _resolve_files(
    session, settings: Settings, tenant_id: str, body: JobCreate
) -> tuple[dict[str, str], dict[str, str]]:
    """Check each named file exists with the right purpose and fill each teacher's format.
    Returns file id → role, and dataset role (`train`, `validation`) → detected format."""
    if (body.teacher is None) == (body.teachers is None):
        raise APIError(
            422, "invalid_request",
            "Give the teacher as `teacher`, or several as `teachers`: exactly one of them.", "teacher",
        )  # fmt: skip
    roles = {}
    for field, teacher in body.teacher_refs():
        row = _named_file(session, tenant_id, teacher.file_id, f"{field}.file_id", "teacher")
        _check_teacher(settings, field, teacher, row.format)
        roles.setdefault(row.id, "teacher")
    dataset_formats = {}
    for role in ("train", "validation"):
        file_id = getattr(body.dataset, f"{role}_file_id")
        if file_id is not None:
            row = _named_file(session, tenant_id, file_id, f"dataset.{role}_file_id", "dataset")
            roles.setdefault(row.id, role)
            dataset_formats[role] = row.format
    tokenizer_id = body.dataset.tokenizer_file_id
    if tokenizer_id is not None:
        tokenizer = _named_file(session, tenant_id, tokenizer_id, "dataset.tokenizer_file_id", "tokenizer")
        roles.setdefault(tokenizer.id, "tokenizer")
    elif "jsonl" in dataset_formats.values():
        role = next(role for role, file_format in dataset_formats.items() if file_format == "jsonl")
        raise APIError(
            422, "tokenizer_required",
            f"dataset.{role}_file_id is a JSON Lines text file, which is tokenized with the models' own "
            "tokenizer: upload it (purpose `tokenizer`) and give it as dataset.tokenizer_file_id.",
            "dataset.tokenizer_file_id",
        )  # fmt: skip
    _check_feature_pairs(body, len(body.teacher_refs()))
    return roles, dataset_formats


def _named_file(session, tenant_id: str, file_id: str, param: str, purpose: str) -> File:
    row = get_owned(session, File, tenant_id, file_id, param)
    if row.purpose != purpose:
        raise APIError(
            422, "wrong_file_purpose",
            f"File {file_id} was uploaded with purpose {row.purpose!r}; this field needs a {purpose!r} file.",
            param,
        )  # fmt: skip
    return row


def _check_teacher(settings: Settings, field: str, teacher: TeacherRef, detected_format: str) -> None:
    if teacher.format is None:
        teacher.format = detected_format
    elif teacher.format != detected_format:
        raise APIError(
            422, "format_mismatch",
            f"{field}.format is {teacher.format!r} but file {teacher.file_id} is a {detected_format!r} file.",
            f"{field}.format",
        )  # fmt: skip
    if teacher.format == "pt2" and not settings.pt2_allowed:  # a pt2 file uploaded while they were allowed
        raise policy.pt2_not_allowed(settings, f"{field}.format")
    if teacher.format == "safetensors" and teacher.architecture is None:
        raise APIError(
            422, "architecture_required",
            "A safetensors teacher holds weights only: give its `architecture` (a model spec).",
            f"{field}.architecture",
        )  # fmt: skip
    if teacher.format == "pt2" and teacher.architecture is not None:
        raise APIError(
            422, "unexpected_architecture",
            f"A pt2 teacher carries its own architecture: remove {field}.architecture.",
            f"{field}.architecture",
        )  # fmt: skip


def _design_student(body: JobCreate) -> None:
    """Fill `student.architecture` from `student.derive` and the first teacher's architecture."""
    student = body.student
    if (student.architecture is None) == (student.derive is None):
        raise APIError(
            422, "invalid_request",
            "Give the student's `architecture`, or `derive` to design it from the teacher: exactly one.",
            "student.architecture",
        )  # fmt: skip
    if student.derive is None:
        return
    field, teacher = body.teacher_refs()[0]
    if teacher.architecture is None:
        raise APIError(
            422, "architecture_required",
            f"student.derive designs the student from {field}'s architecture, which a pt2 teacher does not "
            "declare: use a safetensors teacher, or give student.architecture.",
            "student.derive",
        )  # fmt: skip
    student.architecture = derive_spec(teacher.architecture, student.derive.depth, student.derive.width)


def _check_classes(body: JobCreate) -> None:
    """Every teacher with a declared architecture, and every peer, has the student's classes."""
    num_classes = body.student.architecture.num_classes
    models = [
        (field, teacher.architecture, "student.architecture.num_classes")
        for field, teacher in body.teacher_refs()
        if teacher.architecture
    ] + [
        (f"Peer {i}", peer, f"distillation.peers.{i}.num_classes")
        for i, peer in enumerate(body.distillation.peers)
    ]
    for name, architecture, param in models:
        if architecture.num_classes != num_classes:
            raise APIError(
                422, "incompatible_shapes",
                f"{name} has {architecture.num_classes} classes but the student {num_classes}: "
                "they must agree.",
                param,
            )  # fmt: skip


def _check_method(body: JobCreate) -> None:
    distillation = body.distillation
    if distillation.method == "born_again" and distillation.features:
        raise APIError(
            422, "unsupported_combination",
            "born_again generations are taught by the previous student, which lacks the teacher layers that "
            "`features` names: drop `features` or use another method.",
            "distillation.features",
        )  # fmt: skip


DATASET_FORMATS = {"transformer": ("npz", "jsonl")}  # by student family; every other family: npz


def _check_text_models(body: JobCreate, dataset_formats: dict[str, str]) -> None:
    """A transformer reads token ids (npz, or JSON Lines with a tokenizer), every other family features
    (npz): the student, the data and each teacher of declared architecture must agree."""
    student = body.student.architecture
    text = student.family == "transformer"
    readable = DATASET_FORMATS.get(student.family, ("npz",))
    for role, file_format in dataset_formats.items():
        if file_format not in readable:
            raise APIError(
                422, "incompatible_dataset",
                f"dataset.{role}_file_id is a {file_format!r} file, which a {student.family} student does "
                f"not read (it reads {' or '.join(readable)}): JSON Lines text needs a transformer student.",
                f"dataset.{role}_file_id",
            )  # fmt: skip
    if body.dataset.tokenizer_file_id is not None and not text:
        raise APIError(
            422, "unexpected_tokenizer",
            f"A tokenizer serves a transformer student's text data, but the student is a {student.family} "
            "model: remove dataset.tokenizer_file_id.",
            "dataset.tokenizer_file_id",
        )  # fmt: skip
    for field, teacher in body.teacher_refs():
        architecture = teacher.architecture
        if architecture is None:
            continue
        if (architecture.family == "transformer") != text:
            raise APIError(
                422, "incompatible_architectures",
                f"{field} is a {architecture.family} model but the student a {student.family} model: a "
                "transformer reads token ids and the other families features, so both must be transformers "
                "or neither.",
                f"{field}.architecture",
            )  # fmt: skip
        if text and architecture.max_length < student.max_length:
            raise APIError(
                422, "incompatible_shapes",
                f"The student reads up to {student.max_length} tokens but {field} only "
                f"{architecture.max_length} (its max_length), so the student's later positions could never "
                f"be taught: set student.architecture.max_length to at most {architecture.max_length}.",
                "student.architecture.max_length",
            )  # fmt: skip


def _check_transformer_distillation(body: JobCreate) -> None:
    """TinyBERT: a transformer student, a first teacher that is a transformer of declared architecture,
    and a layer map (checked with the engine's rules) that fits both."""
    distillation = body.distillation
    config = distillation.transformer
    if config is None:
        return
    student = body.student.architecture
    if student.family != "transformer":
        raise APIError(
            422, "transformer_required",
            f"distillation.transformer (TinyBERT) matches transformer layers, but the student is a "
            f"{student.family} model: use a transformer student, or remove distillation.transformer.",
            "distillation.transformer",
        )  # fmt: skip
    field, teacher = body.teacher_refs()[0]
    if teacher.architecture is None or teacher.architecture.family != "transformer":
        what = (
            "a pt2 program, whose architecture is not declared" if teacher.architecture is None
            else f"a {teacher.architecture.family} model"
        )  # fmt: skip
        raise APIError(
            422, "transformer_required",
            f"distillation.transformer (TinyBERT) reads the layers of {field}, which is {what}: make it a "
            "safetensors transformer teacher with its architecture.",
            "distillation.transformer",
        )  # fmt: skip
    if config.layer_map is not None:
        try:
            check_layer_map(config.layer_map, student.num_layers, teacher.architecture.num_layers)
        except DistillError as error:
            message = error.message[0].upper() + error.message[1:] + "."
            raise APIError(422, error.code, message, "distillation.transformer.layer_map") from None
    if distillation.method == "born_again":
        raise APIError(
            422, "unsupported_combination",
            "born_again generations are taught by the previous student, which lacks the teacher layers that "
            "distillation.transformer (TinyBERT) reads: remove it or use another method.",
            "distillation.transformer",
        )  # fmt: skip


def _check_feature_pairs(body: JobCreate, teacher_count: int) -> None:
    for i, pair in enumerate(body.distillation.features):
        if pair.teacher_index >= teacher_count:
            raise APIError(
                422, "unknown_teacher",
                f"Feature pair {i} reads teacher {pair.teacher_index}, but the job has {teacher_count} "
                "teacher(s) (counted from 0).",
                f"distillation.features.{i}.teacher_index",
            )  # fmt: skip


def _enqueue(session, job: Job) -> None:
    try:
        enqueue_job(job.id)
    except Exception as exc:  # the broker is down: the job must not sit in `queued` forever
        error = {
            "code": "queue_unavailable",
            "message": f"The job queue did not accept the job ({exc}). Retry.",
        }
        transition(session, job.id, ["queued"], "failed", error=error)
        add_event(session, job.pk, error["message"], "error")
        session.commit()
        raise APIError(503, "queue_unavailable", error["message"]) from None


@router.get("", response_model=Page[JobObject], responses=ERRORS)
def list_jobs(
    session: SessionDep,
    tenant_id: TenantDep,
    limit: Limit = 20,
    after: After = None,
    status: JobStatus | None = None,
):
    query = owned_by(Job, tenant_id)
    if status is not None:
        query = query.where(Job.status == status)
    rows, has_more = paginate(session, query, Job, after, limit)
    return Page[JobObject](data=[to_object(r) for r in rows], has_more=has_more)


@router.get("/{job_id}", response_model=JobObject, responses=ERRORS)
def retrieve_job(job_id: str, session: SessionDep, tenant_id: TenantDep):
    return to_object(get_owned(session, Job, tenant_id, job_id))


@router.post("/{job_id}/cancel", response_model=JobObject, responses=ERRORS)
def cancel_job(job_id: str, session: SessionDep, tenant_id: TenantDep):
    job = get_owned(session, Job, tenant_id, job_id)
    cancelled_in_queue = transition(session, job.id, ["queued"], "cancelled")
    if cancelled_in_queue:
        add_event(session, job.pk, "Job cancelled before it started.")
    elif transition(session, job.id, ["validating", "running"], "cancelling"):
        add_event(session, job.pk, "Cancellation requested; the worker stops at its next training step.")
    elif job.status != "cancelling":
        raise APIError(
            409, "job_not_cancellable", f"Job {job_id} has already {job.status}; nothing to cancel."
        )
    session.commit()
    if cancelled_in_queue:  # a job re-queued after a lost worker may have saved a checkpoint
        StoredCheckpoint(job.tenant_id, job.id).delete()
    session.refresh(job)
    return to_object(job)


@router.get(
    "/{job_id}/events",
    response_model=Page[EventObject],
    responses={
        **ERRORS,
        200: {
            "description": "The events; with `Accept: text/event-stream`, a live stream of `job.event` "
            "messages (then one `end` message) until the job ends. Resumes after `Last-Event-ID`.",
            "content": {"text/event-stream": {}},
        },
    },
)
def list_events(
    job_id: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    tenant_id: TenantDep,
    limit: Limit = 100,
    after: After = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
):
    job = get_owned(session, Job, tenant_id, job_id)
    query = select(JobEvent).where(JobEvent.job_pk == job.pk)
    if "text/event-stream" in request.headers.get("accept", ""):
        resume = session.scalar(
            select(JobEvent.pk).where(JobEvent.job_pk == job.pk, JobEvent.id == (last_event_id or after))
        )
        stream = job_event_stream(sessionmaker_for(settings.resolved_database_url), job.pk, resume or 0)
        return StreamingResponse(
            stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    rows, has_more = paginate(session, query, JobEvent, after, limit, newest_first=False)
    events = [EventObject(id=e.id, created_at=e.created_at, level=e.level, message=e.message) for e in rows]
    return Page[EventObject](data=events, has_more=has_more)


@router.get("/{job_id}/metrics", response_model=MetricList, responses=ERRORS)
def list_metrics(job_id: str, session: SessionDep, tenant_id: TenantDep, name: str | None = None):
    job = get_owned(session, Job, tenant_id, job_id)
    query = select(JobMetric).where(JobMetric.job_pk == job.pk)
    if name is not None:
        query = query.where(JobMetric.name == name)
    rows = session.scalars(query.order_by(JobMetric.step, JobMetric.pk))
    return MetricList(
        data=[MetricPoint(step=m.step, epoch=m.epoch, name=m.name, value=m.value) for m in rows]
    )


@router.get("/{job_id}/artifacts", response_model=Page[ArtifactObject], responses=ERRORS)
def list_artifacts(job_id: str, session: SessionDep, tenant_id: TenantDep):
    job = get_owned(session, Job, tenant_id, job_id)
    artifacts = [
        ArtifactObject(name=a.name, bytes=a.bytes, sha256=a.sha256, content_type=a.content_type)
        for a in job.artifacts
    ]
    return Page[ArtifactObject](data=artifacts)


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=StreamingResponse,
    responses={**ERRORS, **DOWNLOAD_RESPONSES},
)
def download_artifact(
    job_id: str, name: str, request: Request, session: SessionDep, storage: StorageDep, tenant_id: TenantDep
):
    job = get_owned(session, Job, tenant_id, job_id)
    artifact = session.scalar(select(Artifact).where(Artifact.job_pk == job.pk, Artifact.name == name))
    if artifact is None:
        raise not_found("artifact", name)
    return stream_object(
        request,
        storage,
        artifact.storage_key,
        artifact.bytes,
        artifact.sha256,
        artifact.content_type,
        artifact.name,
    )
