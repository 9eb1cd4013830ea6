"""The rules a job request must meet, in one place: `resolve_job` turns a submitted request and its
files into the resolved request that is stored and run, or refuses it naming the field at fault.

The rules about files (each named file exists, has the right purpose, a teacher's format, which data a
student reads) live here; the rules about the job itself (feature pairs, classes, methods, TinyBERT) are
the engine's own (`engine.plan.rules`), which the engine applies again before it trains.
"""

from collections.abc import Callable
from dataclasses import dataclass

from core.config import Settings
from core.errors import RequestError, not_found, unprocessable
from core.job_bounds import TeacherFile, check_bounds
from core.job_request import JobCreate, StudentRef, TeacherRef, engine_job, teacher_sources
from core.models import File, Job
from engine.plan.design import derive_spec
from engine.plan.errors import TIME_LIMIT_EXCEEDED, JobFailed
from engine.plan.rules import check_job, initialising_teacher_architecture

FileLookup = Callable[[str], File | None]  # a file of the caller's tenant by id, or None
# What a job may change from the one it resumes from (`resume_from`): nothing it trains.
NOT_TRAINED = {"name": True, "gates": True, "resume_from": True, "training": {"max_seconds"}}
DATASET_FORMATS = {"transformer": ("npz", "jsonl")}  # by student family; every other family: npz


@dataclass(frozen=True)
class ResolvedJob:
    request: JobCreate  # every default and derived field filled in
    file_roles: dict[str, str]  # file id -> the role it plays (teacher, train, validation, tokenizer)


def resolve_job(request: JobCreate, find_file: FileLookup, settings: Settings) -> ResolvedJob:
    """The request with each teacher's format and the student's architecture filled in (the submitted
    request is not changed), or `RequestError` naming the field."""
    if (request.teacher is None) == (request.teachers is None):
        raise unprocessable(
            "invalid_request",
            "Give the teacher as `teacher`, or several as `teachers`: exactly one of them.",
            param="teacher",
        )
    roles: dict[str, str] = {}
    teachers, teacher_files = [], []
    for field, teacher in request.teacher_refs():
        file = _named_file(find_file, teacher.file_id, f"{field}.file_id", "teacher")
        teachers.append(_resolved_teacher(settings, field, teacher, file.format))
        teacher_files.append(TeacherFile(field, file.bytes))
        roles.setdefault(file.id, "teacher")
    datasets = _dataset_files(request, find_file, roles)
    resolved = _with_teachers(request, teachers)
    resolved = resolved.model_copy(update={"student": _designed_student(resolved)})
    resolved = _with_time_bound(resolved, settings)
    _check_dataset_formats(resolved, {role: file.format for role, file in datasets.items()})
    _check_gates(resolved)
    job = engine_job(resolved)
    try:
        check_job(job, resolved.teacher_fields())
    except JobFailed as error:
        raise _refused(error) from None
    check_bounds(
        job,
        settings,
        teachers=teacher_files,
        train_samples=datasets["train"].samples,
        dataset_bytes=sum(file.bytes for file in datasets.values()),
    )
    return ResolvedJob(resolved, roles)


def check_resumable(request: JobCreate, earlier: Job | None, *, checkpoint_kept: bool) -> None:
    """A job that goes on from `earlier`'s checkpoint (`resume_from`): a job of the tenant's that ran
    out of time and still keeps its checkpoint, with the same request but for what it does not train."""
    if earlier is None:
        raise not_found("job", request.resume_from, "resume_from")
    code = (earlier.error or {}).get("code")
    if code != TIME_LIMIT_EXCEEDED:
        ended = f"{earlier.status} ({code})" if code else earlier.status
        raise unprocessable(
            "not_resumable",
            f"Job {earlier.id} is {ended}: only a job that ran out of time (`time_limit_exceeded`) keeps a "
            "checkpoint to go on from. Submit without `resume_from`.",
            param="resume_from",
        )
    if not checkpoint_kept:
        raise unprocessable(
            "not_resumable",
            f"Job {earlier.id} keeps no checkpoint: it saved none before its time ran out, or a job that "
            "resumed from it has saved its own (resume from that one). Submit without `resume_from`.",
            param="resume_from",
        )
    ours = request.model_dump(mode="json", exclude=NOT_TRAINED)
    theirs = JobCreate.model_validate(earlier.request).model_dump(mode="json", exclude=NOT_TRAINED)
    field = _first_difference(ours, theirs)
    if field is not None:
        raise unprocessable(
            "not_resumable",
            f"`{field}` differs from job {earlier.id}'s: a job goes on from another's checkpoint only with "
            "the same request, but for `training.max_seconds`, `gates` and `name`.",
            param=field,
        )


def _first_difference(ours: object, theirs: object, path: str = "") -> str | None:
    """The dotted path of the first value that differs between two JSON values, or None."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        keys = [*ours, *(key for key in theirs if key not in ours)]
        found = (_first_difference(ours.get(k), theirs.get(k), f"{path}{k}.") for k in keys)
    elif isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        pairs = enumerate(zip(ours, theirs, strict=True))
        found = (_first_difference(a, b, f"{path}{i}.") for i, (a, b) in pairs)
    else:
        return None if ours == theirs else path.rstrip(".")
    return next((field for field in found if field is not None), None)


def _with_time_bound(request: JobCreate, settings: Settings) -> JobCreate:
    """The server's bound where the request sets none, so that the stored job says what it may take."""
    if request.training.max_seconds is not None:
        return request
    training = request.training.model_copy(update={"max_seconds": settings.max_job_seconds})
    return request.model_copy(update={"training": training})


def _check_gates(request: JobCreate) -> None:
    for number, gate in enumerate(request.gates):
        if gate.metric == "int8.accuracy" and "int8" not in request.export:
            raise unprocessable(
                "invalid_request",
                'A gate on int8.accuracy needs the int8 student: add "int8" to export.',
                param=f"gates.{number}.metric",
            )


def _refused(error: JobFailed) -> RequestError:
    """A job rule the engine checks, answered as the API's 422."""
    return unprocessable(error.code, error.message, param=error.param)


def _named_file(find_file: FileLookup, file_id: str, param: str, purpose: str) -> File:
    row = find_file(file_id)
    if row is None:
        raise not_found("file", file_id, param)
    if row.purpose != purpose:
        raise unprocessable(
            "wrong_file_purpose",
            f"File {file_id} was uploaded with purpose {row.purpose!r}; this field needs a {purpose!r} file.",
            param=param,
        )
    return row


def _resolved_teacher(
    settings: Settings, field: str, teacher: TeacherRef, detected_format: str
) -> TeacherRef:
    if teacher.format not in (None, detected_format):
        raise unprocessable(
            "format_mismatch",
            f"{field}.format is {teacher.format!r} but file {teacher.file_id} is a {detected_format!r} file.",
            param=f"{field}.format",
        )
    if detected_format == "pt2" and not settings.pt2_allowed:  # a pt2 file uploaded while they were allowed
        raise pt2_not_allowed(settings, f"{field}.format")
    if detected_format == "safetensors" and teacher.architecture is None:
        raise unprocessable(
            "architecture_required",
            "A safetensors teacher holds weights only: give its `architecture` (a model spec).",
            param=f"{field}.architecture",
        )
    if detected_format != "safetensors" and teacher.architecture is not None:
        raise unprocessable(
            "unexpected_architecture",
            f"A {detected_format} teacher carries its own architecture: remove {field}.architecture.",
            param=f"{field}.architecture",
        )
    return teacher.model_copy(update={"format": detected_format})


def pt2_not_allowed(settings: Settings, param: str) -> RequestError:
    """The one answer to a pt2 teacher where the operator has not said every uploader is trusted."""
    why = (
        "the operator turned them off (DISTILL_ALLOW_PT2=off)"
        if settings.allow_pt2 == "off"
        else "this server has API keys on, so its uploaders are not all trusted (DISTILL_ALLOW_PT2=on "
        "would allow them)"
    )
    return unprocessable(
        "pt2_not_allowed",
        f"pt2 teachers are refused here: loading a torch.export archive can unpickle, which runs code, and "
        f"{why}. Upload the teacher's weights as safetensors and give its architecture in the job instead.",
        param=param,
    )


def _dataset_files(request: JobCreate, find_file: FileLookup, roles: dict[str, str]) -> dict[str, File]:
    """Dataset role (`train`, `validation`) -> its file; records each file's role."""
    files = {}
    for role in ("train", "validation"):
        file_id = getattr(request.dataset, f"{role}_file_id")
        if file_id is not None:
            file = _named_file(find_file, file_id, f"dataset.{role}_file_id", "dataset")
            roles.setdefault(file.id, role)
            files[role] = file
    tokenizer_id = request.dataset.tokenizer_file_id
    if tokenizer_id is not None:
        tokenizer = _named_file(find_file, tokenizer_id, "dataset.tokenizer_file_id", "tokenizer")
        roles.setdefault(tokenizer.id, "tokenizer")
    elif any(file.format == "jsonl" for file in files.values()):
        role = next(role for role, file in files.items() if file.format == "jsonl")
        raise unprocessable(
            "tokenizer_required",
            f"dataset.{role}_file_id is a JSON Lines text file, which is tokenized with the models' own "
            "tokenizer: upload it (purpose `tokenizer`) and give it as dataset.tokenizer_file_id.",
            param="dataset.tokenizer_file_id",
        )
    return files


def _with_teachers(request: JobCreate, teachers: list[TeacherRef]) -> JobCreate:
    if request.teachers is not None:
        return request.model_copy(update={"teachers": teachers})
    return request.model_copy(update={"teacher": teachers[0]})


def _designed_student(request: JobCreate) -> StudentRef:
    """The student with its architecture: as given, or derived from the first teacher's."""
    student = request.student
    if (student.architecture is None) == (student.derive is None):
        raise unprocessable(
            "invalid_request",
            "Give the student's `architecture`, or `derive` to design it from the teacher: exactly one.",
            param="student.architecture",
        )
    if student.derive is None:
        return student
    try:
        teacher = initialising_teacher_architecture(teacher_sources(request), request.teacher_fields())
    except JobFailed as error:
        raise _refused(error) from None
    architecture = derive_spec(teacher, student.derive.depth, student.derive.width)
    return student.model_copy(update={"architecture": architecture})


def _check_dataset_formats(request: JobCreate, dataset_formats: dict[str, str]) -> None:
    """A transformer reads token ids (npz, or JSON Lines with a tokenizer), every other family features
    (npz)."""
    student = request.student.architecture
    readable = DATASET_FORMATS.get(student.family, ("npz",))
    for role, file_format in dataset_formats.items():
        if file_format not in readable:
            raise unprocessable(
                "incompatible_dataset",
                f"dataset.{role}_file_id is a {file_format!r} file, which a {student.family} student does "
                f"not read (it reads {' or '.join(readable)}): JSON Lines text needs a transformer student.",
                param=f"dataset.{role}_file_id",
            )
    if request.dataset.tokenizer_file_id is not None and student.family != "transformer":
        raise unprocessable(
            "unexpected_tokenizer",
            f"A tokenizer serves a transformer student's text data, but the student is a {student.family} "
            "model: remove dataset.tokenizer_file_id.",
            param="dataset.tokenizer_file_id",
        )
