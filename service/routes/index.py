"""`GET /`: a browser goes to the dashboard; any other client gets where things are.

It needs no key (`KeyCheck` guards `/v1/` only) and names nothing a tenant owns: the same paths for all.
The redirect is a 307, as the presigned downloads' is: temporary, since the answer depends on `Accept` (a
301 or 308 may be cached for every client), and it keeps the method, so `HEAD /` leads to `HEAD /dashboard/`
(a 302 or 303 lets a client switch to `GET`).
"""

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from service.head_routes import add_head_route
from service.routes import dashboard
from service.schemas import ServiceIndex, ServiceLinks

DASHBOARD = f"{dashboard.PATH}/"

VARY = {"Vary": "Accept"}  # the answer depends on it: a cache keeps one per Accept

router = APIRouter(tags=["index"])

OPTIONS = {  # of GET / and HEAD /
    "response_model": ServiceIndex,
    "response_description": "Where things are, for an API client (`Accept` JSON, `*/*` or none).",
    "responses": {
        307: {
            "description": f"A browser (an `Accept` that prefers `text/html` to JSON) goes to `{DASHBOARD}`.",
            "headers": {"Location": {"description": f"`{DASHBOARD}`", "schema": {"type": "string"}}},
        }
    },
}


@router.get("/", **OPTIONS)
async def service_index(request: Request, response: Response):
    """Where things are: the dashboard, the documentation and the OpenAPI document, the `/v1` collections,
    metrics and probes. A browser is redirected to the dashboard instead."""
    if prefers_html(request.headers.get("accept", "*/*")):
        return RedirectResponse(DASHBOARD, headers=VARY)
    response.headers.update(VARY)
    return ServiceIndex(name=request.app.title, version=request.app.version, links=links(request))


add_head_route(router, "/", service_index, **OPTIONS)


def links(request: Request) -> ServiceLinks:
    app = request.app
    return ServiceLinks(
        dashboard=DASHBOARD,
        docs=app.docs_url,
        openapi=app.openapi_url,
        files=app.url_path_for("list_files"),
        jobs=app.url_path_for("list_jobs"),
        metrics=app.url_path_for("prometheus_metrics"),
        healthz=app.url_path_for("healthz"),
        readyz=app.url_path_for("readyz"),
    )


def prefers_html(accept: str) -> bool:
    """Whether `accept` ranks `text/html` above `application/json` (a tie, as `*/*`, is JSON)."""
    return quality(accept, "text/html") > quality(accept, "application/json")


def quality(accept: str, media_type: str) -> float:
    """The `q` an `Accept` header gives `media_type`: that of its most specific range that matches it
    (`type/subtype`, then `type/*`, then `*/*`; RFC 9110 §12.5.1), 0 where none does."""
    ranges = {media_type: 2, f"{media_type.split('/')[0]}/*": 1, "*/*": 0}
    best_specificity, best_quality = -1, 0.0
    for item in accept.split(","):
        media_range, *parameters = (part.strip() for part in item.split(";"))
        specificity = ranges.get(media_range.lower(), -1)
        if specificity > best_specificity:
            best_specificity, best_quality = specificity, _quality_parameter(parameters)
    return best_quality


def _quality_parameter(parameters: list[str]) -> float:
    """The `q=` among a media range's parameters: 1 without one, 0 where it is no number."""
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0
