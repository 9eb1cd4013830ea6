"""`GET /`: a browser goes to the dashboard, any other client gets where things are, with keys on too."""

import pytest

from service.main import create_app
from service.routes.index import prefers_html
from tests.service.tenants import client_for, make_settings

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
API_CLIENTS = [{"Accept": "application/json"}, {"Accept": "*/*"}, {}]

INDEX = {
    "object": "index",
    "name": "distill",
    "version": "1.0.0",
    "links": {
        "dashboard": "/dashboard/",
        "docs": "/docs",
        "openapi": "/openapi.json",
        "files": "/v1/files",
        "jobs": "/v1/jobs",
        "metrics": "/metrics",
        "healthz": "/healthz",
        "readyz": "/readyz",
    },
}


@pytest.fixture(scope="module")
def keyless(tmp_path_factory):
    """A client without a key of an app with keys on."""
    with client_for(create_app(make_settings(tmp_path_factory.mktemp("index"), auth="on"))) as client:
        yield client


def test_a_browser_is_redirected_to_the_dashboard(client):
    for method in (client.get, client.head):
        response = method("/", headers=BROWSER, follow_redirects=False)
        assert response.status_code == 307
        assert response.headers["location"] == "/dashboard/" and response.headers["vary"] == "Accept"
    page = client.get("/", headers=BROWSER)
    assert page.url.path == "/dashboard/" and page.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("headers", API_CLIENTS, ids=["json", "anything", "no-accept"])
def test_an_api_client_gets_where_things_are(client, headers):
    response = client.get("/", headers=headers, follow_redirects=False)
    assert response.status_code == 200
    assert response.json() == INDEX and response.headers["vary"] == "Accept"
    head = client.head("/", headers=headers)
    assert head.status_code == 200 and head.content == b""


def test_every_link_of_the_index_answers(client):
    for name, path in INDEX["links"].items():
        assert client.get(path).status_code == 200, name


def test_with_keys_on_it_needs_no_key_and_is_the_same_for_all(keyless):
    assert keyless.get("/v1/jobs").status_code == 401
    assert keyless.get("/").json() == INDEX
    redirect = keyless.get("/", headers=BROWSER, follow_redirects=False)
    assert (redirect.status_code, redirect.headers["location"]) == (307, "/dashboard/")


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("text/html", True),
        ("TEXT/HTML; charset=utf-8", True),
        ("text/*, application/json;q=0.5", True),
        ("application/json, text/html;q=0.9", False),
        ("text/html;q=0.1, */*", False),
        ("text/html, application/json", False),  # a tie is JSON
        ("text/html;q=0", False),
        ("text/html;q=oops", False),
        ("image/png", False),
    ],
)
def test_html_is_preferred_by_the_accept_headers_quality(accept, html):
    assert prefers_html(accept) is html


def test_the_index_is_in_the_openapi_document(client):
    operations = client.get("/openapi.json").json()["paths"]["/"]
    assert set(operations) == {"get", "head"}
    get = operations["get"]
    assert get["description"] and get["responses"]["307"]["description"]
    schema = get["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ServiceIndex"}
