"""Running one distillation job from the database and writing its results back.

The engine knows nothing of Celery or the database; this module is the glue. `worker.celery_app`
registers `run_job` as the queue's task.
"""

import logging
import tempfile
import time
import zipfile
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import select

from core import lifecycle
from core.checkpoint_store import StoredCheckpoint
from core.gates import Gate, evaluate, summary
from core.job_bounds import time_bound
from core.job_request import JobCreate, engine_job
from core.lifecycle import add_event
from core.media_types import media_type
from core.model_card import MODEL_CARD, CardFile, model_card
from core.models import Artifact, File, Job, JobFile, now
from core.resources import Resources
from core.storage import Storage, job_key, read_chunks
from engine.pipeline import DistillResult, JobFiles
from engine.plan.errors import JobCancelled, JobFailed
from engine.plan.hf_models import PRETRAINED_ARTIFACT
from engine.runtime.devices import resolve_device
from worker.ending import end_failed, end_job
from worker.engine_run import distill_here
from worker.liveness import heartbeat, training_process_lost
from worker.ranks.parent import TrainingProcessLost, distill_on_ranks
from worker.ranks.protocol import Launch
from worker.reporter import DatabaseReporter
from worker.teacher_folders import unpacked_teacher
from worker.watchdog import watchdog

log = logging.getLogger(__name__)


def run_job(resources: Resources, job_id: str) -> None:
    job = _claim(resources, job_id)
    if job is None:
        log.info("job %s is not queued any more; skipping", job_id)
        return
    reporter = DatabaseReporter.for_job(resources, job)
    claimed = time.time()
    try:
        request = JobCreate.model_validate(job.request)
        deadline = claimed + time_bound(engine_job(request), resources.settings)
        with (
            heartbeat(resources.database, job.id, resources.settings.heartbeat_seconds),
            watchdog(resources, job, deadline),
            tempfile.TemporaryDirectory(prefix=f"distill-{job.id}-") as out_dir,
        ):
            result = _distill(resources, job, request, Path(out_dir), reporter, deadline)
            if reporter.should_stop():
                raise JobCancelled
            _finish(resources, job, request.gates, result)
    except JobCancelled:
        end_job(resources, job, lifecycle.CANCEL, "Job cancelled; no student was saved.")
    except TrainingProcessLost as lost:  # as when the process running a one-device job dies
        training_process_lost(resources, job.id, lost.how, lost.out_of_memory)
    except JobFailed as failure:
        end_failed(resources, job, failure)
    except Exception as exc:  # never leave a job `running`: any surprise ends it `failed`, with the reason
        log.exception("job %s crashed", job.id)
        message = f"Unexpected error in the worker: {type(exc).__name__}: {exc}"
        end_job(resources, job, lifecycle.FAIL, message, error={"code": "internal_error", "message": message})


def _claim(resources: Resources, job_id: str) -> Job | None:
    with resources.database.transaction() as session:
        claimed = lifecycle.move(
            session,
            job_id,
            lifecycle.CLAIM,
            started_at=now(),
            heartbeat_at=time.time(),
            attempts=Job.attempts + 1,
        )
        if not claimed:
            return None
        job = session.scalar(select(Job).where(Job.id == job_id))
        resumes = "; it resumes from the last checkpoint, if one was saved" if job.attempts > 1 else ""
        add_event(session, job.pk, f"A worker picked up the job (attempt {job.attempts}){resumes}.")
        return job


def _distill(
    resources: Resources,
    job: Job,
    request: JobCreate,
    out_dir: Path,
    reporter: DatabaseReporter,
    deadline: float,
) -> DistillResult:
    """The job distilled in this process, or on its `training.devices` (`worker.ranks`), stopping at a
    step boundary past `deadline`."""
    stored = _stored_files(resources, job)
    spec = engine_job(request)
    with ExitStack() as stack:
        path_of = {
            file_id: stack.enter_context(resources.storage.local_path(key))
            for file_id, (key, _) in stored.items()
        }
        digests = {path_of[file_id]: sha256 for file_id, (_, sha256) in stored.items()}
        teachers = []
        for field, teacher in request.teacher_refs():
            path = path_of[teacher.file_id]
            if teacher.format == "hf":  # the engine loads the folder; the archive's digest names it
                folder = stack.enter_context(unpacked_teacher(path, resources.settings, field))
                path, digests[folder] = folder, digests[path]
            teachers.append(path)
        dataset = request.dataset
        files = JobFiles(
            teachers=teachers,
            train=path_of[dataset.train_file_id],
            validation=path_of.get(dataset.validation_file_id),
            tokenizer=path_of.get(dataset.tokenizer_file_id),
            digests=digests,
        )
        devices = spec.training.devices
        if devices == 1:
            return distill_here(
                resources,
                job,
                spec,
                files=files,
                file_ids=list(stored),
                out_dir=out_dir,
                reporter=reporter,
                stack=stack,
                deadline=deadline,
            )
        resolve_device(spec.training.device, devices)  # before starting a process per device
        launch = Launch(
            settings=resources.settings, job_id=job.id, files=files, file_ids=list(stored), deadline=deadline
        )
        return distill_on_ranks(launch, devices=devices, out_dir=out_dir)


def _stored_files(resources: Resources, job: Job) -> dict[str, tuple[str, str]]:
    """The storage key and sha256 of each file the job reads, by file id."""
    wanted = [f.file_id for f in job.files]
    with resources.database.transaction() as session:
        rows = session.execute(
            select(File.id, File.storage_key, File.sha256).where(File.id.in_(wanted))
        ).all()
    stored = {file_id: (key, sha256) for file_id, key, sha256 in rows}
    missing = [file_id for file_id in wanted if file_id not in stored]
    if missing:
        raise JobFailed("file_missing", f"File(s) {', '.join(missing)} were deleted before the job ran.")
    return stored


def _finish(resources: Resources, job: Job, gates: list[Gate], result: DistillResult) -> None:
    metrics, verdicts = _with_gates(gates, result.metrics)
    card = _write_model_card(resources, job, metrics, result.artifacts)
    if PRETRAINED_ARTIFACT in result.artifacts:  # the transformers folder carries its card, as hubs expect
        with zipfile.ZipFile(result.artifacts[PRETRAINED_ARTIFACT], "a") as folder:
            folder.write(card, MODEL_CARD)
    files = {**result.artifacts, MODEL_CARD: card}
    artifacts = [_store_artifact(resources.storage, job, name, path) for name, path in files.items()]
    with resources.database.transaction() as session:
        succeeded = lifecycle.move(session, job.id, lifecycle.SUCCEED, attempt=job.attempts, metrics=metrics)
        if succeeded:
            session.add_all(artifacts)
            if verdicts:
                passed = all(verdict["passed"] for verdict in verdicts)
                add_event(session, job.pk, summary(verdicts), "info" if passed else "warning")
            add_event(session, job.pk, "Job succeeded: the student is ready to download.")
    if not succeeded:  # cancelled at the last moment: keep no student
        for artifact in artifacts:
            resources.storage.delete(artifact.storage_key)
        raise JobCancelled
    StoredCheckpoint(resources.storage, job.tenant_id, job.id).delete()


def _store_artifact(storage: Storage, job: Job, name: str, path: Path) -> Artifact:
    # Per attempt: a worker that was only slow, finishing late, must not overwrite (or, fenced off,
    # delete) the files of the attempt that took the job over.
    key = job_key(job.tenant_id, job.id, f"attempt-{job.attempts}/{name}")
    with path.open("rb") as stream:
        stored = storage.write(key, read_chunks(stream))
    content_type = media_type(path.suffix.removeprefix("."))
    return Artifact(
        job_pk=job.pk,
        name=name,
        bytes=stored.bytes,
        sha256=stored.sha256,
        content_type=content_type,
        storage_key=key,
    )


def _write_model_card(resources: Resources, job: Job, metrics: dict, artifacts: dict[str, Path]) -> Path:
    with resources.database.transaction() as session:
        rows = session.execute(
            select(JobFile.role, File.filename, File.sha256)
            .join(File, File.id == JobFile.file_id)
            .where(JobFile.job_pk == job.pk)
            .order_by(JobFile.role)
        ).all()
    card = model_card(job.id, job.request, metrics, [CardFile(*row) for row in rows], list(artifacts))
    path = next(iter(artifacts.values())).parent / MODEL_CARD
    path.write_text(card)
    return path


def _with_gates(gates: list[Gate], metrics: dict) -> tuple[dict, list[dict]]:
    """The metrics with the request's gates evaluated on them (`metrics.gates`), and those results."""
    verdicts = evaluate(gates, metrics)
    return ({**metrics, "gates": verdicts} if verdicts else metrics), verdicts
