"""The dashboard's files: served without a key while `/v1` wants one, the page for any job path a browser
visits, and nothing of it in the OpenAPI document (tests/e2e/test_dashboard.py drives it in chromium)."""

import pytest

from service.main import create_app
from tests.service.tenants import client_for, make_settings

BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture(scope="module")
def keyless(tmp_path_factory):
    """A client without a key of an app with keys on."""
    with client_for(create_app(make_settings(tmp_path_factory.mktemp("dashboard"), auth="on"))) as client:
        yield client


def test_the_page_and_its_scripts_need_no_key(keyless):
    assert keyless.get("/v1/jobs").status_code == 401
    page = keyless.get("/dashboard/", headers=BROWSER)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/dashboard/app.js">' in page.text
    for script in ("app.js", "api.js", "chart.js", "dom.js", "format.js", "job.js", "jobs.js", "results.js"):
        response = keyless.get(f"/dashboard/{script}")
        assert response.status_code == 200, script
        assert response.headers["content-type"].startswith("text/javascript"), script  # modules need it
    assert keyless.get("/dashboard/style.css").headers["content-type"].startswith("text/css")


def test_a_job_path_is_the_page_for_a_browser_and_a_missing_file_is_404(keyless):
    index = keyless.get("/dashboard/", headers=BROWSER).text
    assert keyless.get("/dashboard/jobs/job-0123", headers=BROWSER).text == index
    assert keyless.get("/dashboard", headers=BROWSER, follow_redirects=True).text == index
    assert keyless.get("/dashboard/missing.js").status_code == 404


def test_the_dashboard_is_not_in_the_openapi_document(keyless):
    assert not [path for path in keyless.get("/openapi.json").json()["paths"] if "dashboard" in path]
