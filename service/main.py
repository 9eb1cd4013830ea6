"""The FastAPI application."""

from fastapi import FastAPI

from service.errors import install_error_handlers
from service.limits import BodySizeLimit
from service.routes import files, health, jobs


def create_app() -> FastAPI:
    app = FastAPI(
        title="distill",
        version="1.0.0",
        summary="Knowledge distillation as a service: upload a teacher and a dataset, get a small student.",
    )
    app.add_middleware(BodySizeLimit)
    install_error_handlers(app)
    for module in (health, files, jobs):
        app.include_router(module.router)
    return app


app = create_app()
