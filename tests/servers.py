"""Real PostgreSQL, Redis, RabbitMQ and S3 (moto's server) for the tests: a fresh database / Redis db /
queue / bucket per run, dropped afterwards.

Under CI=true an unreachable server (or a missing program, `missing`) fails the test; elsewhere it skips
with a message naming it.
"""

import os
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import httpx
import pytest

from tests.stack import free_port

POSTGRES_ADMIN_URL = os.environ.get(
    "DISTILL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_SERVER_URL = os.environ.get("DISTILL_TEST_REDIS_URL", "redis://127.0.0.1:6379")
RABBITMQ_URL = os.environ.get("DISTILL_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


def missing(message: str):
    """Skip the test for want of what `message` names; under CI=true, fail it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; under CI=true this test must run", pytrace=False)
    pytest.skip(message)


def unavailable(what: str, exc: Exception):
    missing(f"{what} is not reachable ({exc})")


@contextmanager
def postgres_database():
    import psycopg

    name = f"distill_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {POSTGRES_ADMIN_URL}", exc)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
            yield f"{base}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def redis_url():
    import redis

    server = redis.Redis.from_url(REDIS_SERVER_URL, socket_connect_timeout=3)
    try:
        server.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {REDIS_SERVER_URL}", exc)
    db = _free_redis_db(server)
    url = f"{REDIS_SERVER_URL.rstrip('/')}/{db}"
    try:
        yield url
    finally:
        redis.Redis.from_url(url).flushdb()


def _free_redis_db(server) -> int:
    """An empty Redis db number, claimed with a marker key so parallel runs do not share it."""
    import redis

    for db in secrets.SystemRandom().sample(range(1, 16), 15):
        client = redis.Redis.from_url(f"{REDIS_SERVER_URL.rstrip('/')}/{db}")
        if client.dbsize() == 0 and client.set("distill-test-claim", "1", nx=True, ex=3600):
            return db
    pytest.fail("no empty Redis db number (1-15) for this test run")


@contextmanager
def rabbitmq_queue():
    """The RabbitMQ URL and a queue name of this run's own, deleted afterwards."""
    from kombu import Connection

    queue = f"distill-test-{secrets.token_hex(4)}"
    connection = Connection(RABBITMQ_URL, connect_timeout=3)
    try:
        connection.ensure_connection(max_retries=1)
    except Exception as exc:  # kombu raises the transport's own errors
        unavailable(f"RabbitMQ at {RABBITMQ_URL}", exc)
    try:
        yield RABBITMQ_URL, queue
    finally:
        with connection.channel() as channel:
            channel.queue_delete(queue)
        connection.release()


@contextmanager
def s3_server():
    """moto's S3 server on a free loopback port, named (with dummy credentials) by the AWS_* environment
    variables that boto3 reads here and in the API and worker processes the tests start; yields its URL."""
    url = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", url.rsplit(":", 1)[1]]
    # Its log goes to a file: a pipe nobody reads fills up and stops the server mid-request.
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(command, stdout=log, stderr=log)
    try:
        _wait_for_s3(server, url, log)
        with _environment(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                          AWS_DEFAULT_REGION="us-east-1", AWS_PROFILE=None):  # fmt: skip
            yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def _wait_for_s3(server: subprocess.Popen, url: str, log) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    log.seek(0)
    missing(f"moto's S3 server (moto[server]) did not start: {log.read()[-2000:].decode(errors='replace')}")


@contextmanager
def _environment(**variables: str | None):
    saved = {name: os.environ.get(name) for name in variables}
    _set_environment(variables)
    try:
        yield
    finally:
        _set_environment(saved)


def _set_environment(variables: dict[str, str | None]) -> None:
    for name, value in variables.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextmanager
def s3_bucket():
    """A new bucket on the server the AWS_* variables name; emptied (uploads in progress too) and deleted
    afterwards."""
    import boto3

    client, name = boto3.client("s3"), f"distill-test-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for listed in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=listed["Key"])
        client.delete_bucket(Bucket=name)
