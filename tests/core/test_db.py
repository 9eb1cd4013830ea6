"""Where a database's reads run (`Settings.reads_on_loop`): on the event loop for a database on this
machine, on the threads for one across a network, unless the setting says."""

import pytest
from sqlalchemy import make_url

from core.db import Database, on_this_machine


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("sqlite:///var/distill.db", True),
        ("postgresql+psycopg://user@127.0.0.1:5432/distill", True),
        ("postgresql+psycopg://user@127.0.0.2/distill", True),
        ("postgresql+psycopg://user@[::1]/distill", True),
        ("postgresql+psycopg://user@localhost/distill", True),
        ("postgresql+psycopg://user@/distill", True),  # libpq's default Unix socket
        ("postgresql+psycopg://user@/distill?host=/var/run/postgresql", True),
        ("postgresql+psycopg://user@db.example.com/distill", False),
        ("postgresql+psycopg://user@10.0.0.5/distill", False),
        ("postgresql+psycopg://user@/distill?host=db.example.com", False),
    ],
)
def test_a_database_is_on_this_machine_over_loopback_or_a_socket(url, local):
    assert on_this_machine(make_url(url)) is local


@pytest.mark.parametrize(
    ("setting", "url", "on_loop"),
    [
        ("auto", "postgresql+psycopg://user@127.0.0.1/distill", True),
        ("auto", "postgresql+psycopg://user@db.example.com/distill", False),
        ("on", "postgresql+psycopg://user@db.example.com/distill", True),
        ("off", "postgresql+psycopg://user@127.0.0.1/distill", False),
        ("off", "sqlite:///{home}/distill.db", False),
    ],
)
def test_the_setting_says_where_reads_run(tmp_path, setting, url, on_loop):
    database = Database(url.format(home=tmp_path), reads_on_loop=setting)  # connects to nothing until used
    assert database.reads_on_loop is on_loop
    server_reader = database.reader is not database.engine
    assert server_reader is (database.engine.dialect.name != "sqlite")
