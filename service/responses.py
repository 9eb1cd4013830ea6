"""Bodies a route encodes itself.

FastAPI validates whatever a route returns against the route's `response_model` again, then encodes it,
and for a plain `def` route it validates on a worker thread: a second hop to the thread pool and back.
A read route that built its body from the schema's models already returns `json_response(body)`
instead: the same bytes, encoded once. The route keeps `response_model=`, which documents the body in
the OpenAPI document.
"""

from fastapi import Response
from pydantic import BaseModel


def json_response(body: BaseModel) -> Response:
    """`body` as FastAPI would encode it for a `response_model` of its own type."""
    return Response(body.model_dump_json(by_alias=True), media_type="application/json")
