"""A worker ends a job it holds: the terminal transition and its event in one transaction, then the
job's checkpoint deleted, unless the job is to go on from it later."""

from core import lifecycle
from core.checkpoint_store import StoredCheckpoint
from core.lifecycle import add_event
from core.models import Job
from core.resources import Resources
from engine.plan.errors import TIME_LIMIT_EXCEEDED, JobFailed


def end_failed(resources: Resources, job: Job, failure: JobFailed) -> bool:
    """`end_job` with the failure's code and message; a job out of time keeps its checkpoint, for a job
    that resumes from it (`resume_from`)."""
    return end_job(
        resources,
        job,
        lifecycle.FAIL,
        f"Job failed ({failure.code}): {failure.message}",
        error={"code": failure.code, "message": failure.message},
        keep_checkpoint=failure.code == TIME_LIMIT_EXCEEDED,
    )


def end_job(
    resources: Resources,
    job: Job,
    transition: lifecycle.Transition,
    message: str,
    *,
    error: dict | None = None,
    keep_checkpoint: bool = False,
) -> bool:
    """True if this attempt ended the job; False if it had ended already or a later attempt owns it."""
    with resources.database.transaction() as session:
        ended = lifecycle.move(session, job.id, transition, attempt=job.attempts, error=error)
        if ended:
            add_event(session, job.pk, message, "error" if transition is lifecycle.FAIL else "info")
    if ended and not keep_checkpoint:  # else a later attempt owns the job now, and its checkpoint
        StoredCheckpoint(resources.storage, job.tenant_id, job.id).delete()
    return ended
