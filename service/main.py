"""The FastAPI application."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from core.config import Settings, get_settings
from core.resources import Resources
from service.body_limits import BodySizeLimit
from service.errors import install_error_handlers
from service.kept_bodies import KeptBodies
from service.key_check import KeyCheck
from service.openapi import with_bearer_scheme
from service.prometheus import RequestMetrics, make_registry
from service.routes import dashboard, files, health, index, jobs, prometheus


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API serving `settings` (default: the environment's): its auth, limits, database, storage and
    job queue, built once here."""
    resources = Resources.from_settings(settings or get_settings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The routes' threads, as many as the database pool's connections (`Settings.threads`).
        anyio.to_thread.current_default_thread_limiter().total_tokens = resources.settings.threads
        yield

    app = FastAPI(
        title="distill",
        version="1.0.0",
        summary="Knowledge distillation as a service: upload a teacher and a dataset, get a small student.",
        lifespan=lifespan,
    )
    app.state.resources = resources
    app.state.kept_bodies = KeptBodies()
    app.state.prometheus, requests = make_registry(resources)
    app.add_middleware(BodySizeLimit, settings=resources.settings)
    app.add_middleware(KeyCheck, resources=resources)  # a request without a key goes no further
    app.add_middleware(RequestMetrics, requests=requests)  # outermost: every answer is counted, 401s too
    install_error_handlers(app)
    for module in (index, health, files, jobs, prometheus, dashboard):
        app.include_router(module.router)
    app.openapi = with_bearer_scheme(app)
    return app
