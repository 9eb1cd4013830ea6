"""Every non-2xx answer is `{"error": {"code", "message", "param"}}` (the spec's error body): a refused
request (`core.errors.RequestError`), a body that fails validation, an unknown route, or a surprise."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import RequestError
from core.storage import StorageUnavailable


class ErrorDetail(BaseModel):
    code: str
    message: str
    param: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


STORAGE_UNAVAILABLE = {
    503: {
        "model": ErrorBody,
        "description": "`storage_unavailable`: the storage cannot be used now (a bucket missing, refusing "
        "access or out of reach); the message says what to check, as `/readyz` does.",
    }
}


def error_response(
    status: int, code: str, message: str, *, param: str | None = None, headers=None
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, param=param))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def refusal(error: RequestError, headers=None) -> JSONResponse:
    """The answer to a refused request."""
    return error_response(error.status, error.code, error.message, param=error.param, headers=headers)


def _param_path(loc: tuple, body: object) -> str | None:
    """The request field an error is about, as the user wrote it (`student.architecture.hidden_sizes`)."""
    source, *parts = loc or ("body",)
    if source == "header":
        return "-".join(word.capitalize() for word in str(parts[0]).split("-")) if parts else None
    if source not in ("body", "query", "path", "form"):
        parts = [source, *parts]
    path: list[str] = []
    node = body
    for part in parts:
        # Pydantic puts union tags into the location ("mlp" of a discriminated union, "constrained-float"
        # of `float | "auto"`); users never typed them.
        if isinstance(node, dict) and part not in node and part in node.values():
            continue
        if path and node is not None and not isinstance(node, dict | list):
            break  # a value's own union branches
        path.append(str(part))
        node = _child(node, part)
    return ".".join(path) or None


def _child(node: object, part: object) -> object:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _validation_message(error: dict, param: str | None) -> str:
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "json_invalid":
        return f"The request body is not valid JSON ({error.get('ctx', {}).get('error', message)})."
    if param is None and error["type"] in ("model_attributes_type", "dict_type", "missing"):
        return "The request body must be a JSON object, sent with `Content-Type: application/json`."
    if error["type"] == "extra_forbidden":
        return f"Unknown field {param!r}: remove it (see the API reference for the accepted fields)."
    if error["type"] == "union_tag_invalid":
        return f"{param}: {message}"
    return f"{param}: {message}" if param else message


def _unparsable_body_message(request: Request, exc: StarletteHTTPException) -> str:
    """Like a JSON syntax error, a body that cannot be parsed at all is the request's fault (422)."""
    cause = exc.__cause__
    reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc.detail)
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith(("multipart/", "application/x-www-form-urlencoded")):
        return (
            f"The request body is not a valid multipart form ({reason.rstrip('.')}): send the fields "
            "as `multipart/form-data` with its boundary, e.g. `curl -F file=@train.npz -F purpose=dataset`."
        )
    return f"The request body is not valid JSON ({reason.rstrip('.')}): send UTF-8 JSON."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StorageUnavailable)
    async def _storage_unavailable(_request: Request, exc: StorageUnavailable):
        return error_response(503, "storage_unavailable", f"The storage cannot be used now: {exc}.")

    @app.exception_handler(RequestError)
    async def _api_error(_request: Request, exc: RequestError):
        return refusal(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        # A JSON syntax error's location is a character offset, not a field.
        param = None if first["type"] == "json_invalid" else _param_path(tuple(first["loc"]), exc.body)
        return error_response(422, "invalid_request", _validation_message(first, param), param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI's and Starlette's answer to a body they cannot parse
            return error_response(422, "invalid_request", _unparsable_body_message(request, exc))
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        code = codes.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code in (404, 405):
            message = (
                f"{message}: {request.method} {request.url.path} is not an endpoint of this API (see /docs)."
            )
        return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception):
        return error_response(500, "internal_error", f"Unexpected server error ({type(exc).__name__}).")
