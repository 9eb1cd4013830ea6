"""The FastAPI application."""

from fastapi import FastAPI

from service.config import Settings, get_settings
from service.errors import install_error_handlers
from service.key_check import KeyCheck
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
    app.add_middleware(KeyCheck, settings=settings)  # outermost: a request without a key goes no further
    install_error_handlers(app)
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    for module in (health, files, jobs):
        app.include_router(module.router)
    return app


app = create_app()
