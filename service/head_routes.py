"""`HEAD` beside a `GET` route: FastAPI answers it with a 405 otherwise."""

from collections.abc import Callable

from fastapi import APIRouter


def add_head_route(router: APIRouter, path: str, endpoint: Callable, **options) -> None:
    """`HEAD` beside a `GET` route, by the same endpoint (`curl -I`, `wget --spider`, a CI's size check)."""
    router.add_api_route(
        path, endpoint, methods=["HEAD"], name=f"{endpoint.__name__}_head",
        summary=f"Headers of {endpoint.__name__.replace('_', ' ')}, without the body", **options,
    )  # fmt: skip
