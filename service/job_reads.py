"""How the API reads jobs for their bodies (`GET /v1/jobs/{id}`, `GET /v1/jobs`).

A job's body is kept, encoded, with its state (`service.kept_bodies`): the columns that change after the
job is created (status, times, progress, error; the JSON ones as stored, undecoded). Its metrics and
artifacts change nothing else: they are written once, in the transaction that moves it to `succeeded`,
a change of its status. So a read first reads each job's state (`KEYS`), and only for the jobs whose
kept body no longer holds, the columns a body shows and their artifacts, in one query each for a whole
page. All are rows read on a connection: ORM `Job`s would cost more to build than the answer, and load
their files and artifacts with two more queries per read (`selectin`).
"""

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import Connection, Row, Select, Text, bindparam, cast, select

from core import lifecycle
from core.job_request import JobCreate
from core.models import Artifact, Job
from service.kept_bodies import KeptBodies
from service.responses import encoded
from service.schemas import ArtifactRef, JobObject
from service.tenancy import owned_by

STORED_JSON = (cast(Job.progress, Text).label("progress_json"), cast(Job.error, Text).label("error_json"))
KEYS = (Job.pk, Job.id, Job.status, Job.started_at, Job.finished_at, *STORED_JSON)
COLUMNS = (Job.pk, Job.id, Job.name, Job.status, Job.created_at, Job.started_at, Job.finished_at,
           Job.request, Job.progress, Job.metrics, Job.error)  # fmt: skip
BODIES = select(*COLUMNS, *STORED_JSON).where(Job.pk.in_(bindparam("job_pks", expanding=True)))
ARTIFACTS = (
    select(Artifact.job_pk, Artifact.name, Artifact.bytes, Artifact.sha256)
    .where(Artifact.job_pk.in_(bindparam("job_pks", expanding=True)))
    .order_by(Artifact.pk)
)


def listed(tenant_id: str, status: lifecycle.Status | None) -> Select:
    """The tenant's jobs, those with `status` if given. Without it, all statuses are named all the same:
    the (tenant, status) index then serves a page newest first from each status's newest entries, where
    the tenant alone made the database read and sort all of its jobs for every page."""
    return owned_by(Job, tenant_id).where(Job.status.in_([status] if status else lifecycle.STATUSES))


def job_bodies(connection: Connection, keys: list[Row], kept: KeptBodies) -> list[bytes]:
    """The encoded body of each job named by a row of `KEYS`: as kept, if kept in the job's state now;
    else read, encoded and kept."""
    bodies = {key.pk: kept.body(key.id, _state(key)) for key in keys}
    missing = [pk for pk, body in bodies.items() if body is None]
    if missing:
        rows = connection.execute(BODIES, {"job_pks": missing}).all()
        for row, job in zip(rows, job_objects(connection, rows), strict=True):
            bodies[row.pk] = encoded(job)
            kept.keep(row.id, _state(row), bodies[row.pk])
    return [bodies[key.pk] for key in keys]


def _state(row: Row) -> tuple:
    return row.status, row.started_at, row.finished_at, row.progress_json, row.error_json


def job_objects(connection: Connection, rows: list[Row]) -> list[JobObject]:
    """The bodies of these rows of `COLUMNS`, their artifacts read in one query."""
    artifacts = defaultdict(list)
    for artifact in connection.execute(ARTIFACTS, {"job_pks": [row.pk for row in rows]}):
        artifacts[artifact.job_pk].append(artifact)
    return [job_object(row, artifacts[row.pk]) for row in rows]


def job_object(job, artifacts: Iterable) -> JobObject:
    """The body of `job` (a `Job`, or a row of `COLUMNS`) with its artifacts."""
    return JobObject(
        id=job.id, name=job.name, status=job.status, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, request=JobCreate.model_validate(job.request), progress=job.progress,
        metrics=job.metrics, error=job.error,
        artifacts=[ArtifactRef(name=a.name, bytes=a.bytes, sha256=a.sha256) for a in artifacts],
    )  # fmt: skip
