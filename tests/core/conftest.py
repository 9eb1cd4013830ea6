"""A migrated database for each test module of the core, on SQLite and on PostgreSQL; a storage for each
test that asks, a local folder and an S3 bucket."""

import pytest

from core.db import Database
from core.migrate import upgrade
from core.resources import make_storage
from tests.servers import postgres_database


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('database') / 'distill.db'}"
        upgrade(url)
        yield Database(url)
        return
    with postgres_database() as url:
        upgrade(url)
        database = Database(url)
        yield database
        database.engine.dispose()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def storage(request, tmp_path):
    url = str(tmp_path / "storage") if request.param == "local" else request.getfixturevalue("s3_url")
    return make_storage(url)
