"""`GET /metrics` for Prometheus: requests by route, jobs as the database has them, finished jobs'
durations; open on the loopback default, the operator's token only with keys on."""

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from core.models import Job, TeacherCacheEntry
from service.main import create_app
from tests.job_rows import set_job
from tests.service.helpers import dataset_bytes, job_request, safetensors_teacher, upload_ok
from tests.service.tenants import client_for, make_settings

TOKEN = "operator-token-0123456789"


def scrape(client, **headers) -> dict:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_requests_are_counted_by_route_template_method_and_status(client, queued_job):
    before = scrape(client)
    key = ("distill_http_request_duration_seconds_count",
           (("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "200")))  # fmt: skip
    client.get(f"/v1/jobs/{queued_job['id']}")
    client.get(f"/v1/jobs/{queued_job['id']}")
    client.get("/v1/jobs/job-doesnotexist")
    after = scrape(client)
    assert after[key] == before.get(key, 0) + 2
    missing = (key[0], (("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "404")))
    assert after[missing] >= 1


def test_the_dashboards_files_count_as_one_route(client):
    before = scrape(client)
    for path in ("/dashboard/", "/dashboard/app.js", "/dashboard/jobs/job-0123"):
        client.get(path, headers={"Accept": "text/html"})
    key = (
        "distill_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/dashboard"), ("status", "200")),
    )
    assert scrape(client)[key] == before.get(key, 0) + 3


def test_jobs_are_reported_as_the_database_has_them(client, resources, queued_job):
    metrics = scrape(client)
    with resources.database.sessions() as session:
        queued = session.scalar(select(func.count()).where(Job.status == "queued"))
    assert metrics[("distill_jobs", (("status", "queued"),))] == queued
    assert metrics[("distill_queue_depth", ())] == queued
    assert ("distill_jobs_heartbeating", ()) in metrics


def test_the_teacher_cache_is_reported_as_the_database_has_it(tmp_path):
    with client_for(create_app(make_settings(tmp_path))) as client:
        with client.app.state.resources.database.transaction() as session:
            session.add_all(
                TeacherCacheEntry(
                    tenant_id="default", key=f"k{n}", storage_key=f"caches/default/{n}", bytes=n
                )
                for n in (1000, 2000)
            )
        metrics = scrape(client)
    assert metrics[("distill_teacher_cache_entries", ())] == 2
    assert metrics[("distill_teacher_cache_bytes", ())] == 3000


def test_finished_jobs_durations_fall_in_their_buckets(tmp_path):
    with client_for(create_app(make_settings(tmp_path))) as client:
        teacher = upload_ok(client, safetensors_teacher(), "teacher", "t.safetensors")["id"]
        dataset = upload_ok(client, dataset_bytes(), "dataset", "d.npz")["id"]
        for seconds in (20, 400):
            job_id = client.post("/v1/jobs", json=job_request(teacher, dataset)).json()["id"]
            set_job(client.app.state.resources.database, job_id, status="succeeded", started_at=1000,
                    finished_at=1000 + seconds)  # fmt: skip
        metrics = scrape(client)
    bucket = "distill_job_duration_seconds_bucket"
    assert metrics[(bucket, (("le", "10.0"), ("status", "succeeded")))] == 0
    assert metrics[(bucket, (("le", "30.0"), ("status", "succeeded")))] == 1
    assert metrics[(bucket, (("le", "900.0"), ("status", "succeeded")))] == 2
    assert metrics[("distill_job_duration_seconds_sum", (("status", "succeeded"),))] == 420


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no token set", "token set"])
def test_with_keys_on_only_the_operators_token_reads_them(tmp_path, token):
    settings = make_settings(tmp_path, auth="on", metrics_token=token)
    with client_for(create_app(settings)) as client:
        if token is None:
            response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert (
                response.status_code == 404 and "DISTILL_METRICS_TOKEN" in response.json()["error"]["message"]
            )
            return
        assert client.get("/metrics").status_code == 401
        assert (
            client.get("/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code
            == 401
        )
        assert ("distill_queue_depth", ()) in scrape(client, Authorization=f"Bearer {TOKEN}")
