"""The Celery task: run one distillation job from the database, write its results back.

The engine (`engine`) knows nothing of Celery or the database; this module is the glue.
"""

import logging
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from celery.signals import worker_process_init, worker_ready
from sqlalchemy import select

from engine.errors import DistillError, JobCancelled
from engine.pipeline import Checkpoints, DistillResult, JobFiles, run_distillation
from engine.specs import EngineJob, TeacherSource
from service.checkpoints import StoredCheckpoint
from service.config import get_settings
from service.db import get_engine, session_scope
from service.job_state import add_event, transition
from service.models import Artifact, File, Job, now
from service.schemas import JobCreate
from service.storage import get_storage, job_key, read_chunks
from worker.celery_app import RUN_JOB_TASK, app
from worker.liveness import heartbeat, run_reaper
from worker.reporter import DatabaseReporter

log = logging.getLogger(__name__)
CONTENT_TYPES = {
    ".safetensors": "application/octet-stream",
    ".pt2": "application/zip",
    ".json": "application/json",
}


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    """A forked child must not share the parent's database connections."""
    get_engine().dispose(close=False)


@worker_ready.connect
def _start_reaper(**_kwargs) -> None:
    threading.Thread(
        target=run_reaper, args=(get_settings(), threading.Event()), name="reaper", daemon=True
    ).start()


@app.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> None:
    job = _claim(job_id)
    if job is None:
        log.info("job %s is not queued any more; skipping", job_id)
        return
    settings = get_settings()
    reporter = DatabaseReporter(
        job.id, job.pk, settings.progress_interval_seconds, settings.cancel_check_seconds
    )
    try:
        with (
            heartbeat(job.id, settings.heartbeat_seconds),
            tempfile.TemporaryDirectory(prefix=f"distill-{job.id}-") as out_dir,
        ):
            result = _distill(job, Path(out_dir), reporter)
            if reporter.should_stop():
                raise JobCancelled
            _finish(job, result)
    except JobCancelled:
        _end(job, "cancelled", "Job cancelled; no student was saved.")
    except DistillError as exc:
        _end(
            job,
            "failed",
            f"Job failed ({exc.code}): {exc.message}",
            {"code": exc.code, "message": exc.message},
        )
    except Exception as exc:  # never leave a job `running`: any surprise ends it `failed`, with the reason
        log.exception("job %s crashed", job.id)
        message = f"Unexpected error in the worker: {type(exc).__name__}: {exc}"
        _end(job, "failed", message, {"code": "internal_error", "message": message})


def _claim(job_id: str) -> Job | None:
    with session_scope() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        claimed = transition(
            session, job_id, ["queued"], "validating", started_at=now(), heartbeat_at=time.time()
        )
        if job is None or not claimed:
            return None
        job.attempts += 1
        resumes = "; it resumes from the last checkpoint, if one was saved" if job.attempts > 1 else ""
        add_event(session, job.pk, f"A worker picked up the job (attempt {job.attempts}){resumes}.")
        return job


def _distill(job: Job, out_dir: Path, reporter: DatabaseReporter) -> DistillResult:
    request = JobCreate.model_validate(job.request)
    teachers = [teacher for _field, teacher in request.teacher_refs()]
    engine_job = EngineJob(
        teachers=[
            TeacherSource(format=t.format, architecture=t.architecture, weight=t.weight) for t in teachers
        ],
        student_architecture=request.student.architecture,
        student_init=request.student.derive.init if request.student.derive else "random",
        export=request.export,
        distillation=request.distillation,
        training=request.training,
    )
    storage = get_storage()
    keys = _storage_keys(job)
    with ExitStack() as stack:
        path_of = {file_id: stack.enter_context(storage.local_path(key)) for file_id, key in keys.items()}
        dataset = request.dataset
        files = JobFiles(
            teachers=[path_of[teacher.file_id] for teacher in teachers],
            train=path_of[dataset.train_file_id],
            validation=path_of.get(dataset.validation_file_id),
            tokenizer=path_of.get(dataset.tokenizer_file_id),
        )
        checkpoints = Checkpoints(StoredCheckpoint(job.tenant_id, job.id), get_settings().checkpoint_seconds)
        return run_distillation(engine_job, files, out_dir, reporter, checkpoints)


def _storage_keys(job: Job) -> dict[str, str]:
    """Storage key of each file the job reads, by file id."""
    wanted = [f.file_id for f in job.files]
    with session_scope() as session:
        key_of = dict(session.execute(select(File.id, File.storage_key).where(File.id.in_(wanted))).all())
    missing = [file_id for file_id in wanted if file_id not in key_of]
    if missing:
        raise DistillError("file_missing", f"File(s) {', '.join(missing)} were deleted before the job ran.")
    return key_of


def _finish(job: Job, result: DistillResult) -> None:
    storage = get_storage()
    artifacts = []
    for name, path in result.artifacts.items():
        # Per attempt: a worker that was only slow, finishing late, must not overwrite (or, fenced off,
        # delete) the files of the attempt that took the job over.
        key = job_key(job.tenant_id, job.id, f"attempt-{job.attempts}/{name}")
        with path.open("rb") as stream:
            stored = storage.write(key, read_chunks(stream))
        content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        artifacts.append(Artifact(job_pk=job.pk, name=name, bytes=stored.bytes, sha256=stored.sha256,
                                  content_type=content_type, storage_key=key))  # fmt: skip
    with session_scope() as session:
        succeeded = transition(
            session, job.id, ["running"], "succeeded", job.attempts, metrics=result.metrics
        )
        if succeeded:
            session.add_all(artifacts)
            add_event(session, job.pk, "Job succeeded: the student is ready to download.")
    if not succeeded:  # cancelled at the last moment: keep no student
        for artifact in artifacts:
            storage.delete(artifact.storage_key)
        raise JobCancelled
    StoredCheckpoint(job.tenant_id, job.id).delete()


def _end(job: Job, status: str, message: str, error: dict | None = None) -> None:
    with session_scope() as session:
        ended = transition(
            session, job.id, ["validating", "running", "cancelling"], status, job.attempts, error=error
        )
        if ended:
            add_event(session, job.pk, message, "error" if status == "failed" else "info")
    if ended:  # else a later attempt owns the job now, and its checkpoint
        StoredCheckpoint(job.tenant_id, job.id).delete()
