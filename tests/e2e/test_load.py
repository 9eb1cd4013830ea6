"""Many clients at once (CI pipelines polling their jobs) do not take the API down: 128 concurrent
connections on the job, list and download endpoints of the real API process, for a few seconds, are all
answered without a 5xx, and a new client is answered at once afterwards; on SQLite and PostgreSQL."""

import asyncio
import time
from collections import Counter

import httpx
import pytest

from tests.e2e.conftest import job_request
from tests.stack import ServiceStack

pytestmark = pytest.mark.e2e

CONNECTIONS = 128
SECONDS = 4.0
REQUEST_TIMEOUT = 20.0  # a request stuck this long means the API stopped answering


async def hammer(url: str, paths: list[str]) -> tuple[Counter, list[str]]:
    """Each connection requests the paths in turn until time is up; the statuses, and any failures."""
    statuses, failures = Counter(), []
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT) as client:
        deadline = time.monotonic() + SECONDS

        async def connection(first: int) -> None:
            turn = first
            while time.monotonic() < deadline:
                path = paths[turn % len(paths)]
                turn += 1
                try:
                    response = await client.get(path)
                except httpx.HTTPError as error:
                    failures.append(f"GET {path}: {type(error).__name__}")
                    continue
                statuses[response.status_code] += 1

        await asyncio.gather(*(connection(k) for k in range(CONNECTIONS)))
    return statuses, failures


def assert_holds_the_load(stack: ServiceStack, task) -> None:
    teacher = stack.client.upload(task.teacher, "teacher")["id"]
    train = stack.client.upload(task.train, "dataset")["id"]
    job = stack.client.submit(job_request(teacher, train, training={"epochs": 1}))
    assert stack.client.wait_for_job(job["id"])["status"] == "succeeded"
    paths = [f"/v1/jobs/{job['id']}", "/v1/jobs?limit=20", f"/v1/jobs/{job['id']}/artifacts/student.json"]

    statuses, failures = asyncio.run(hammer(stack.url, paths))

    assert not failures, f"{len(failures)} requests failed, e.g. {failures[:3]}\n{stack.logs()}"
    assert set(statuses) == {200}, f"{statuses}\n{stack.logs()}"
    with httpx.Client(
        base_url=stack.url, timeout=5.0
    ) as newcomer:  # answered at once, not after a pool timeout
        assert newcomer.get(f"/v1/jobs/{job['id']}").status_code == 200


def test_many_clients_at_once_on_sqlite(stack, task):
    assert_holds_the_load(stack, task)


@pytest.mark.postgres
def test_many_clients_at_once_on_postgresql(tmp_path, postgres_url, task):
    with ServiceStack(tmp_path, database_url=postgres_url) as stack:
        assert_holds_the_load(stack, task)
