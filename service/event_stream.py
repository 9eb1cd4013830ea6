"""`GET /v1/jobs/{id}/events` with `Accept: text/event-stream`: the job's events live, until it ends;
then one `end` message whose data is how it ended: `{"status": "failed", "error": {...}}`."""

import asyncio
import json
import time
from collections.abc import AsyncIterator

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from core.lifecycle import TERMINAL
from core.models import Job, JobEvent
from service.schemas import EventObject

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0


def _read_after(
    sessions: sessionmaker[Session], job_pk: int, after_pk: int
) -> tuple[list[JobEvent], dict | None]:
    """Events after `after_pk`, and how the job ended (its status and error), None while it runs. The
    status is read first: a finished job's last events were committed with (or before) its final
    status, so none can be missed."""
    with sessions() as session:
        status, error = session.execute(select(Job.status, Job.error).where(Job.pk == job_pk)).one()
        query = (
            select(JobEvent).where(JobEvent.job_pk == job_pk, JobEvent.pk > after_pk).order_by(JobEvent.pk)
        )
        return list(session.scalars(query)), {
            "status": status,
            "error": error,
        } if status in TERMINAL else None


def _frame(event: JobEvent) -> str:
    body = EventObject(id=event.id, created_at=event.created_at, level=event.level, message=event.message)
    return f"id: {event.id}\nevent: job.event\ndata: {json.dumps(body.model_dump())}\n\n"


async def job_event_stream(sessions: sessionmaker[Session], job_pk: int, after_pk: int) -> AsyncIterator[str]:
    """`sessions` makes sessions on the request's database: the stream outlives the request's session."""
    last_sent = time.monotonic()
    while True:
        events, ended = await run_in_threadpool(_read_after, sessions, job_pk, after_pk)
        for event in events:
            yield _frame(event)
            after_pk, last_sent = event.pk, time.monotonic()
        if ended is not None:
            yield f"event: end\ndata: {json.dumps(ended)}\n\n"
            return
        if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_SECONDS)
