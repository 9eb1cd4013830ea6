"""Refuse oversized request bodies as they arrive, before anything buffers them (413)."""

from core.config import Settings
from core.errors import RequestError
from service.errors import refusal

JSON_BODY_LIMIT = 1024 * 1024
MULTIPART_OVERHEAD = 1024 * 1024


class _TooLarge(Exception):
    pass


def upload_too_large(limit: int) -> RequestError:
    """The one answer to an oversized upload, whether refused here or while storing it."""
    message = f"The file is larger than this server's limit of {limit} bytes."
    return RequestError(413, "file_too_large", message, param="file")


def _is_upload(scope) -> bool:
    return scope["method"] == "POST" and scope["path"].rstrip("/") == "/v1/files"


class BodySizeLimit:
    """Pure ASGI middleware: checks `Content-Length` up front and counts the bytes of chunked bodies."""

    def __init__(self, app, settings: Settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self._limit(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._refuse(scope, receive, send, limit)

        received = 0
        started = exceeded = False

        async def counting_receive():
            nonlocal received, exceeded
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                exceeded = True
                raise _TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if exceeded and not started:
                return  # the app's answer to the cut-off body (FastAPI makes it a 400): the 413 replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            pass
        if exceeded and not started:
            await self._refuse(scope, receive, send, limit)

    def _limit(self, scope) -> int:
        # The multipart envelope is allowed for here; storing holds the file itself to the limit.
        return self.settings.max_upload_bytes + MULTIPART_OVERHEAD if _is_upload(scope) else JSON_BODY_LIMIT

    async def _refuse(self, scope, receive, send, limit: int):
        if _is_upload(scope):
            error = upload_too_large(self.settings.max_upload_bytes)
        else:
            message = f"The request body is larger than this server accepts ({limit} bytes)."
            error = RequestError(413, "payload_too_large", message)
        await refusal(error, {"Connection": "close"})(scope, receive, send)
