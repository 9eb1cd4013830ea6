"""Liveness and readiness probes, and the error body of a path that does not exist."""

from tests.service.helpers import assert_error


def test_healthz_says_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_database_broker_and_storage(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok", "storage": "ok"}


def test_unknown_route_is_404_with_error_body(client):
    error = assert_error(client.get("/v1/nothing-here"), 404, None, "not_found")
    assert "/v1/nothing-here" in error["message"]


def test_wrong_method_is_405_with_error_body(client):
    assert_error(client.put("/v1/files"), 405, None, "method_not_allowed")


def test_readyz_names_an_unreachable_database(client, resources, monkeypatch):
    from sqlalchemy import create_engine

    missing = create_engine("sqlite:////nonexistent-folder/for/sure/distill.db")
    monkeypatch.setattr(resources.database, "engine", missing)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"] != "ok" and "OperationalError" in body["database"]
    assert body["broker"] == "ok"


def test_readyz_names_an_unreachable_broker(client, resources, monkeypatch):
    monkeypatch.setattr(resources.queue, "problem", lambda: "ConnectionRefusedError: refused")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": "ok",
        "broker": "ConnectionRefusedError: refused",
        "storage": "ok",
    }
