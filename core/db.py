"""A database: its engine and the sessions on it, made from a URL (SQLite, PostgreSQL)."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker


class Database:
    """`connections`: the most the pool opens at once; a caller needing another waits for one."""

    def __init__(self, url: str, connections: int = 5):
        self.engine = make_engine(url, connections)
        self.embedded = self.engine.dialect.name == "sqlite"  # a file this process reads itself, no server
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self.sessions() as session, session.begin():
            yield session

    def forget_connections(self) -> None:
        """In a forked child: drop the parent's pooled connections without closing them under it."""
        self.engine.dispose(close=False)


def make_engine(url: str, connections: int = 5) -> Engine:
    pool = {"pool_size": connections, "max_overflow": 0}
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def _tune_sqlite(dbapi_connection, _record) -> None:
    # WAL lets the API read while a worker writes; the busy timeout makes writers queue, not fail.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
