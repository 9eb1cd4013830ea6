"""`GET /metrics`: the Prometheus text format (`service/prometheus.py` says what it holds)."""

import secrets

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.errors import RequestError
from service.deps import SettingsDep

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus metrics", "content": {CONTENT_TYPE_LATEST: {}}},
        401: {"description": "With auth on: no `DISTILL_METRICS_TOKEN` as the bearer token."},
        404: {"description": "With auth on and no `DISTILL_METRICS_TOKEN` set: metrics are off."},
    },
)
def prometheus_metrics(request: Request, settings: SettingsDep):
    """Request counts and latencies by route, jobs by status, the queue's depth, running jobs with a fresh
    heartbeat, finished jobs' durations. With auth on, for the operator's token only."""
    if settings.auth == "on":
        _check_token(settings.metrics_token, request.headers.get("authorization", ""))
    return Response(generate_latest(request.app.state.prometheus), media_type=CONTENT_TYPE_LATEST)


def _check_token(token, authorization: str) -> None:
    if token is None:
        raise RequestError(404, "not_found", "Metrics are off: set DISTILL_METRICS_TOKEN to serve them.")
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        given.encode(), token.get_secret_value().encode()
    ):
        message = "GET /metrics takes the operator's DISTILL_METRICS_TOKEN as a bearer token, not an API key."
        raise RequestError(401, "unauthorized", message)
