"""Bodies a route encodes itself.

FastAPI validates whatever a route returns against the route's `response_model` again, then encodes it,
and for a plain `def` route it validates on a worker thread: a second hop to the thread pool and back.
A read route that built its body from the schema's models already returns `json_response(body)`
instead: the same bytes, encoded once. The route keeps `response_model=`, which documents the body in
the OpenAPI document.
"""

from fastapi import Response
from pydantic import BaseModel


def encoded(body: BaseModel) -> bytes:
    """`body` as FastAPI encodes it for a `response_model` of its own type."""
    return body.model_dump_json(by_alias=True).encode()


def encoded_page(items: list[bytes], has_more: bool) -> bytes:
    """`encoded(Page(data=items, has_more=has_more))` for items encoded already."""
    end = b'],"has_more":true}' if has_more else b'],"has_more":false}'
    return b"".join((b'{"object":"list","data":[', b",".join(items), end))


def json_response(body: BaseModel | bytes) -> Response:
    """A body, encoded here if it is not already."""
    content = body if isinstance(body, bytes) else encoded(body)
    return Response(content, media_type="application/json")
