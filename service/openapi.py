"""The OpenAPI document, with the API key's scheme on every `/v1` operation (`KeyCheck` checks every one).

The scheme is added to the document FastAPI generates rather than declared by a `Security` dependency of
the routes: FastAPI solves a route's dependencies at every request, and a security one took a tenth of
a status read's time (25 of 280 us) to document what the middleware does.
"""

from collections.abc import Callable

from fastapi import FastAPI

BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key (`distill keys create --tenant NAME`); required when the server runs with "
    "`DISTILL_AUTH=on`.",
}


def with_bearer_scheme(app: FastAPI) -> Callable[[], dict]:
    """`app.openapi`, which also documents the bearer scheme on the operations under `/v1/`."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = generate()  # kept by FastAPI as app.openapi_schema
            document.setdefault("components", {}).setdefault("securitySchemes", {})["HTTPBearer"] = BEARER
            for path, operations in document["paths"].items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = [{"HTTPBearer": []}]
        return app.openapi_schema

    return openapi
