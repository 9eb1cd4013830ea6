"""With `DISTILL_AUTH=on`, every `/v1` request shows a valid API key before anything reads its body.

A pure ASGI middleware rather than a route dependency: FastAPI parses a multipart body (spooling the
file to disk) before it runs a route's dependencies, so a dependency would let a caller without a key
make the server take in a whole upload before its 401. Here the 401 comes from the headers alone, and
the key's tenant goes into the request's state, where `deps.get_tenant` hands it to the routes.
"""

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from core.resources import Resources
from service.auth import Unauthorized, authenticate
from service.errors import refusal


class KeyCheck:
    def __init__(self, app, resources: Resources):
        self.app = app
        self.resources = resources

    async def __call__(self, scope, receive, send):
        off = self.resources.settings.auth == "off"
        if scope["type"] != "http" or off or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        try:
            tenant_id = await run_in_threadpool(self._tenant, Headers(scope=scope).get("authorization"))
        except Unauthorized as exc:
            headers = exc.headers | {"Connection": "close"}  # the unread body is not waited for
            return await refusal(exc, headers)(scope, receive, send)
        scope.setdefault("state", {})["tenant_id"] = tenant_id  # request.state.tenant_id
        await self.app(scope, receive, send)

    def _tenant(self, authorization: str | None) -> str:
        with self.resources.database.sessions() as session:
            return authenticate(session, authorization).tenant_id
