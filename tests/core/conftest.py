"""A migrated database for each test module of the core, on SQLite and on PostgreSQL."""

import pytest

from core.db import Database
from core.migrate import upgrade
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
