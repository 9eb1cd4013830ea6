from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from core.db import Database
from service.deps import ResourcesDep
from service.head_routes import add_head_route
from service.schemas import HealthStatus, ReadyStatus

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthStatus)
def healthz():
    return HealthStatus(status="ok")


add_head_route(router, "/healthz", healthz, response_model=HealthStatus)


@router.get("/readyz", response_model=ReadyStatus, responses={503: {"model": ReadyStatus}})
def readyz(resources: ResourcesDep):
    problems = {
        "database": _database_problem(resources.database) or "ok",
        "broker": resources.queue.problem() or "ok",
        "storage": resources.storage.problem() or "ok",
    }
    ready = set(problems.values()) == {"ok"}
    body = ReadyStatus(status="ok" if ready else "unavailable", **problems)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


add_head_route(router, "/readyz", readyz, response_model=ReadyStatus, responses={503: {"model": ReadyStatus}})


def _database_problem(database: Database) -> str | None:
    try:
        with database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not ready"
        return f"{type(exc).__name__}: {exc}"
    return None
