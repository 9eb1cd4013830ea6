"""The FastAPI application."""

from fastapi import FastAPI, Request

from service.auth import Unauthorized
from service.config import Settings, get_settings
from service.errors import error_response, install_error_handlers
from service.limits import BodySizeLimit
from service.routes import files, health, jobs


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API. With `settings`, the app serves those (auth, limits, database, storage) instead of the
    environment's; the job queue's broker and `/readyz` follow the environment, being one per process."""
    app = FastAPI(
        title="distill",
        version="1.0.0",
        summary="Knowledge distillation as a service: upload a teacher and a dataset, get a small student.",
    )
    app.add_middleware(BodySizeLimit, settings=settings)
    install_error_handlers(app)

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_request: Request, exc: Unauthorized):
        return error_response(exc.status, exc.code, exc.message, exc.param, exc.headers)

    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    for module in (health, files, jobs):
        app.include_router(module.router)
    return app


app = create_app()
