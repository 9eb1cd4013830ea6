"""The schema comes from Alembic alone, and the models agree with it, on SQLite and PostgreSQL."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from core.db import make_engine
from core.migrate import upgrade
from core.models import Base


def assert_matches_models(url: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            tables = set(inspect(connection).get_table_names())
        assert set(Base.metadata.tables) <= tables and "alembic_version" in tables
    finally:
        engine.dispose()


def test_sqlite_upgrade_from_empty_matches_models(tmp_path):
    assert_matches_models(f"sqlite:///{tmp_path / 'fresh.db'}")


def test_upgrade_twice_is_a_no_op(tmp_path):
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    upgrade(url)
    assert_matches_models(url)


@pytest.mark.postgres
def test_postgres_upgrade_from_empty_matches_models(postgres_url):
    assert_matches_models(postgres_url)
