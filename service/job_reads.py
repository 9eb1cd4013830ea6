"""How the API reads jobs for their bodies (`GET /v1/jobs/{id}`, `GET /v1/jobs`).

A job's body is kept, encoded, with its state (`service.kept_bodies`): the columns that change after the
job is created (status, times, progress, error; the JSON ones as stored, undecoded). Its metrics and
artifacts change nothing else: they are written once, in the transaction that moves it to `succeeded`,
a change of its status. So a read first reads each job's state (`KEYS`), and only for the jobs whose
kept body no longer holds, the columns a body shows and their artifacts, in one query each for a whole
page. All are rows read on a connection by statements built once, here: ORM `Job`s would cost more to
build than the answer, and load their files and artifacts with two more queries per read (`selectin`).
"""

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import Connection, Row, Text, bindparam, cast, select

from core.job_request import JobCreate
from core.models import Artifact, Job
from service.kept_bodies import KeptBodies
from service.pagination import TenantPages
from service.responses import encoded, encoded_page
from service.schemas import ArtifactRef, JobObject
from service.tenancy import get_owned, owned_one

STORED_JSON = (cast(Job.progress, Text).label("progress_json"), cast(Job.error, Text).label("error_json"))
KEYS = (Job.id, Job.status, Job.started_at, Job.finished_at, *STORED_JSON)  # past the id: the job's state
COLUMNS = (Job.pk, Job.name, Job.created_at, Job.request, Job.progress, Job.metrics, Job.error)  # the rest

ONE = owned_one(Job, KEYS)
PAGES = TenantPages(Job, KEYS, Job.status)  # newest first by the (tenant, pk) index
BODIES = select(*KEYS, *COLUMNS).where(Job.id.in_(bindparam("job_ids", expanding=True)))
ARTIFACTS = (
    select(Artifact.job_pk, Artifact.name, Artifact.bytes, Artifact.sha256)
    .where(Artifact.job_pk.in_(bindparam("job_pks", expanding=True)))
    .order_by(Artifact.pk)
)


def job_body(connection: Connection, kept: KeptBodies, tenant_id: str, job_id: str) -> bytes:
    """The tenant's job of this id, encoded (404 if there is none)."""
    return job_bodies(connection, [get_owned(connection, Job, tenant_id, job_id, statement=ONE)], kept)[0]


def page_body(
    connection: Connection,
    kept: KeptBodies,
    tenant_id: str,
    status: str | None,
    after: str | None,
    limit: int,
) -> bytes:
    """A page of the tenant's jobs (with `status`, if given), encoded."""
    keys, has_more = PAGES.page(connection, tenant_id, status, after, limit)
    return encoded_page(job_bodies(connection, keys, kept), has_more)


def job_bodies(connection: Connection, keys: list[Row], kept: KeptBodies) -> list[bytes]:
    """The encoded body of each job named by a row of `KEYS`: as kept, if kept in the job's state now;
    else read, encoded and kept."""
    states = _states(keys)
    bodies = kept.bodies(states)
    missing = [job_id for job_id in states if job_id not in bodies]
    if missing:
        rows = connection.execute(BODIES, {"job_ids": missing}).all()
        for (job_id, state), job in zip(_states(rows).items(), job_objects(connection, rows), strict=True):
            bodies[job_id] = encoded(job)
            kept.keep(job_id, state, bodies[job_id])
    return [bodies[job_id] for job_id in states]


def _states(rows: list[Row]) -> dict[str, tuple]:
    """Each job's state by its id, from rows of `KEYS` (or of `BODIES`, which start with them)."""
    return {job_id: tuple(rest[: len(KEYS) - 1]) for job_id, *rest in rows}


def job_objects(connection: Connection, rows: list[Row]) -> list[JobObject]:
    """The bodies of these rows of `BODIES`, their artifacts read in one query."""
    artifacts = defaultdict(list)
    for artifact in connection.execute(ARTIFACTS, {"job_pks": [row.pk for row in rows]}):
        artifacts[artifact.job_pk].append(artifact)
    return [job_object(row, artifacts[row.pk]) for row in rows]


def job_object(job, artifacts: Iterable) -> JobObject:
    """The body of `job` (a `Job`, or a row of `BODIES`) with its artifacts."""
    return JobObject(
        id=job.id,
        name=job.name,
        status=job.status,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        request=JobCreate.model_validate(job.request),
        progress=job.progress,
        metrics=job.metrics,
        error=job.error,
        artifacts=[ArtifactRef(name=a.name, bytes=a.bytes, sha256=a.sha256) for a in artifacts],
    )
