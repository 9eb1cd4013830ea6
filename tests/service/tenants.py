"""Apps with their own settings (auth on, limits, pt2 policy) over their own migrated database, and
clients that call them as a tenant with an API key."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from core.config import Settings
from core.db import Database
from core.migrate import upgrade
from core.models import Artifact, Job, JobMetric
from core.resources import make_storage
from service.auth import create_key, revoke_key
from service.main import create_app


def make_settings(home: Path, **overrides) -> Settings:
    """Settings on a fresh DISTILL_HOME (its own database and storage), migrated."""
    settings = Settings(home=home, **overrides)
    upgrade(settings.resolved_database_url)
    return settings


@cache
def _database(url: str) -> Database:
    return Database(url)


@contextmanager
def database(settings: Settings):
    with _database(settings.resolved_database_url).transaction() as session:
        yield session


def new_key(settings: Settings, tenant: str) -> str:
    with database(settings) as session:
        return create_key(session, tenant).key


def revoke(settings: Settings, key: str) -> None:
    with database(settings) as session:
        revoke_key(session, key.split("_")[1])


def client_for(app: FastAPI, key: str | None = None) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {key}"} if key else {})


@contextmanager
def tenant_clients(settings: Settings, *tenants: str) -> Iterator[list[TestClient]]:
    """One client per tenant (each with a new key) on one app serving `settings`."""
    app = create_app(settings)
    clients = [client_for(app, new_key(settings, tenant)) for tenant in tenants]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


def finish_job(settings: Settings, job_id: str, artifact: bytes = b'{"family": "mlp"}') -> None:
    """Do what a worker does when a job succeeds: store an artifact, record a metric, mark it done."""
    storage = make_storage(settings.resolved_storage_url)
    key = f"artifacts/{job_id}/student.json"
    stored = storage.write(key, [artifact])
    with database(settings) as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        session.add(JobMetric(job_pk=job.pk, step=1, epoch=1, name="loss", value=0.5))
        session.add(
            Artifact(
                job_pk=job.pk, name="student.json", bytes=stored.bytes, sha256=stored.sha256,
                content_type="application/json", storage_key=key,
            )
        )  # fmt: skip
        session.execute(update(Job).where(Job.id == job_id).values(status="succeeded", finished_at=1))
