"""A request the service refuses: every non-2xx answer of the API is one of these (the spec's error
body `{"error": {"code", "message", "param"}}`)."""


class RequestError(Exception):
    """`status`: the HTTP status; `code`: stable, for programs; `message`: says what to do; `param`: the
    request field at fault, as the user wrote it (`teachers.1.file_id`), if one is."""

    def __init__(self, status: int, code: str, message: str, *, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param


def unprocessable(code: str, message: str, *, param: str | None = None) -> RequestError:
    """A 422: the request is well-formed but breaks a rule, about the field `param` if one is at fault."""
    return RequestError(422, code, message, param=param)


def not_found(kind: str, id_: str, param: str | None = None) -> RequestError:
    return RequestError(404, "not_found", f"No {kind} with id {id_!r}.", param=param)
