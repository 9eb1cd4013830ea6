"""`HEAD` beside a `GET` route: FastAPI answers it with a 405 otherwise."""

from collections.abc import Callable

from fastapi import APIRouter


def add_head_route(router: APIRouter, path: str, endpoint: Callable, **options) -> None:
    """`HEAD` beside a `GET` route, by the same endpoint (`curl -I`, `wget --spider`, a CI's size check)."""
    name = endpoint.__name__
    summary = f"Headers of {name.replace('_', ' ')}, without the body"
    router.add_api_route(path, endpoint, methods=["HEAD"], name=f"{name}_head", summary=summary, **options)
