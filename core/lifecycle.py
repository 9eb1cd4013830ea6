"""A job's statuses and the named transitions between them; every status change goes through `move`.

    queued ──claim──▶ validating ──start──▶ running ──succeed──▶ succeeded
      │                   │                    │
      │                   └──── request cancel ┴──▶ cancelling ──cancel──▶ cancelled
      ├──cancel queued──────────────────────────────────────────────────▶ cancelled
      └──not queued──▶ failed ◀──fail── validating, running, cancelling
    validating, running ──requeue──▶ queued   (the reaper, after a lost worker)

Each move is a conditional UPDATE (`WHERE status IN (sources)`), so the API's cancel, the worker's
progress and every reaper can race without one overwriting another's decision.
"""

from dataclasses import dataclass
from typing import Literal, get_args

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.models import Job, JobEvent, now

Status = Literal["queued", "validating", "running", "succeeded", "failed", "cancelling", "cancelled"]
STATUSES: tuple[str, ...] = get_args(Status)
LIVE = frozenset({"validating", "running", "cancelling"})  # a worker holds the job
UNFINISHED = LIVE | {"queued"}
TERMINAL = frozenset(STATUSES) - UNFINISHED


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[str]
    target: str


def _transition(name: str, sources: set[str], target: str) -> Transition:
    return Transition(name, frozenset(sources), target)


CLAIM = _transition("claim", {"queued"}, "validating")
START = _transition("start running", {"validating"}, "running")
SUCCEED = _transition("succeed", {"running"}, "succeeded")
FAIL = _transition("fail", set(LIVE), "failed")
NOT_QUEUED = _transition("fail unqueued", {"queued"}, "failed")  # the broker refused the job
REQUEST_CANCEL = _transition("request cancel", {"validating", "running"}, "cancelling")
CANCEL = _transition("cancel", {"cancelling"}, "cancelled")
CANCEL_QUEUED = _transition("cancel queued", {"queued"}, "cancelled")
REQUEUE = _transition("requeue", {"validating", "running"}, "queued")
TRANSITIONS = (CLAIM, START, SUCCEED, FAIL, NOT_QUEUED, REQUEST_CANCEL, CANCEL, CANCEL_QUEUED, REQUEUE)
# What `POST /v1/jobs/{id}/cancel` moves, in the order it tries.
CANCELLABLE = CANCEL_QUEUED.sources | REQUEST_CANCEL.sources


def move(
    session: Session,
    job_id: str,
    transition: Transition,
    *,
    attempt: int | None = None,
    seen: str | None = None,
    **fields,
) -> bool:
    """Make the transition if the job's status is one of its sources; True if it moved.

    `attempt`: only if no later attempt has taken the job over since (a worker's own writes).
    `seen`: only if the status is still the one the caller read (the reaper's decisions).
    `fields`: columns written with the status (`finished_at` is set on reaching a terminal status).
    """
    if transition.target in TERMINAL:
        fields.setdefault("finished_at", now())
    sources = transition.sources if seen is None else transition.sources & {seen}
    conditions = [Job.id == job_id, Job.status.in_(sorted(sources))]
    if attempt is not None:
        conditions.append(Job.attempts == attempt)
    result = session.execute(update(Job).where(*conditions).values(status=transition.target, **fields))
    return result.rowcount == 1


def add_event(session: Session, job_pk: int, message: str, level: str = "info") -> None:
    session.add(JobEvent(job_pk=job_pk, message=message, level=level))


def status_of(session: Session, job_id: str) -> str | None:
    return session.scalar(select(Job.status).where(Job.id == job_id))
