"""How the API reads jobs for their bodies (`GET /v1/jobs/{id}`, `GET /v1/jobs`): the columns a job's
body shows, as rows, and their artifacts in one query for a whole page. An ORM `Job` would cost more to
build than the answer, and load its files and artifacts with two more queries per read (`selectin`)."""

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from core import lifecycle
from core.job_request import JobCreate
from core.models import Artifact, Job
from service.schemas import ArtifactRef, JobObject
from service.tenancy import owned_by

COLUMNS = (Job.pk, Job.id, Job.name, Job.status, Job.created_at, Job.started_at, Job.finished_at,
           Job.request, Job.progress, Job.metrics, Job.error)  # fmt: skip
ARTIFACTS = (
    select(Artifact.job_pk, Artifact.name, Artifact.bytes, Artifact.sha256)
    .where(Artifact.job_pk.in_(bindparam("job_pks", expanding=True)))
    .order_by(Artifact.pk)
)


def job_object(job, artifacts: Iterable) -> JobObject:
    """The body of `job` (a `Job`, or a row of COLUMNS) with its artifacts."""
    return JobObject(
        id=job.id, name=job.name, status=job.status, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, request=JobCreate.model_validate(job.request), progress=job.progress,
        metrics=job.metrics, error=job.error,
        artifacts=[ArtifactRef(name=a.name, bytes=a.bytes, sha256=a.sha256) for a in artifacts],
    )  # fmt: skip


def job_objects(session: Session, rows: list) -> list[JobObject]:
    """The bodies of these rows of COLUMNS, their artifacts read in one query."""
    artifacts = defaultdict(list)
    for artifact in session.execute(ARTIFACTS, {"job_pks": [row.pk for row in rows]}):
        artifacts[artifact.job_pk].append(artifact)
    return [job_object(row, artifacts[row.pk]) for row in rows]


def listed(tenant_id: str, status: lifecycle.Status | None) -> Select:
    """The tenant's jobs, those with `status` if given. Without it, all statuses are named all the same:
    the (tenant, status) index then serves a page newest first from each status's newest entries, where
    the tenant alone made the database read and sort all of its jobs for every page."""
    return owned_by(Job, tenant_id).where(Job.status.in_([status] if status else lifecycle.STATUSES))
