"""What `GET /metrics` tells a Prometheus server: each route's request count and latency (from this
process), and the jobs as the database has them (read at each scrape, so every API process reports
the same): how many in each status, the queue's depth, how many a worker is running and heartbeating,
how long finished jobs took, and the teacher outputs kept in the cache."""

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from core import lifecycle
from core.models import Job, TeacherCacheEntry
from core.resources import Resources
from service.routes import dashboard

DURATION_BUCKETS = (10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600)  # seconds


def make_registry(resources: Resources) -> tuple[CollectorRegistry, Histogram]:
    """The app's own registry (never the process-global one: each app, a test's too, counts alone)."""
    registry = CollectorRegistry()
    requests = Histogram(
        "distill_http_request_duration_seconds",
        "HTTP requests by route, method and status, and how long they took to answer (a download's: until "
        "its headers).",
        labelnames=["route", "method", "status"],
        registry=registry,
    )
    registry.register(JobCollector(resources))
    return registry, requests


def _route_label(scope) -> str:
    """The route template; the dashboard's files (served by a frontend route, which has none) as one."""
    route = scope.get("route")
    if hasattr(route, "path"):
        return route.path
    return dashboard.PATH if scope["path"].startswith(dashboard.PATH) else "unmatched"


class RequestMetrics:
    """Pure ASGI middleware: times each request by the route template it matched (`/v1/jobs/{job_id}`)."""

    def __init__(self, app, requests: Histogram):
        self.app, self.requests = app, requests

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def send_noting_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                labels = (_route_label(scope), scope["method"], str(status))
                self.requests.labels(*labels).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, send_noting_status)


class JobCollector(Collector):
    def __init__(self, resources: Resources):
        self.resources = resources

    def collect(self) -> Iterator:
        with self.resources.database.sessions() as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            fresh = Job.heartbeat_at >= time.time() - self.resources.settings.heartbeat_timeout_seconds
            heartbeating = session.scalar(select(func.count()).where(Job.status.in_(lifecycle.LIVE), fresh))
            durations = _durations(session)
            entries, stored = session.execute(
                select(func.count(), func.coalesce(func.sum(TeacherCacheEntry.bytes), 0))
            ).one()
        statuses = GaugeMetricFamily("distill_jobs", "Jobs by status.", labels=["status"])
        for status in lifecycle.STATUSES:
            statuses.add_metric([status], counts.get(status, 0))
        yield statuses
        yield GaugeMetricFamily(
            "distill_queue_depth", "Jobs queued, waiting for a worker.", counts.get("queued", 0)
        )
        yield GaugeMetricFamily(
            "distill_jobs_heartbeating",
            "Jobs a worker is running and whose heartbeat is fresh.",
            heartbeating,
        )
        yield durations
        yield GaugeMetricFamily(
            "distill_teacher_cache_entries",
            "Teacher outputs kept for later jobs (a teacher over a dataset each).",
            entries,
        )
        yield GaugeMetricFamily(
            "distill_teacher_cache_bytes",
            "What they take in the storage, within DISTILL_TEACHER_CACHE_MAX_BYTES.",
            stored,
        )


def _durations(session) -> HistogramMetricFamily:
    """Seconds from start to end of every finished job, by how it ended, in `DURATION_BUCKETS`."""
    seconds = Job.finished_at - Job.started_at
    buckets = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in DURATION_BUCKETS]
    rows = session.execute(
        select(Job.status, func.count(), func.sum(seconds), *buckets)
        .where(Job.status.in_(lifecycle.TERMINAL), Job.started_at.is_not(None), Job.finished_at.is_not(None))
        .group_by(Job.status)
    ).all()
    family = HistogramMetricFamily(
        "distill_job_duration_seconds", "How long finished jobs ran, by how they ended.", labels=["status"]
    )
    for status, count, total, *cumulative in rows:
        bounds = [(str(float(bound)), int(n)) for bound, n in zip(DURATION_BUCKETS, cumulative, strict=True)]
        family.add_metric([status], bounds + [("+Inf", count)], float(total or 0))
    return family
