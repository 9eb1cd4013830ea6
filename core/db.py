"""A database: its engine and the sessions on it, made from a URL (SQLite, PostgreSQL)."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from core.hosts import is_loopback


class Database:
    """`connections`: the most the pool opens at once; a caller needing another waits for one.
    `reads_on_loop`: the setting of that name (`Settings.reads_on_loop`), as `on_this_machine` says for
    `auto`."""

    def __init__(self, url: str, connections: int = 5, reads_on_loop: str = "auto"):
        self.engine = make_engine(url, connections)
        self.embedded = self.engine.dialect.name == "sqlite"  # a file this process reads itself, no server
        self.reads_on_loop = reads_on_loop == "on" or (
            reads_on_loop == "auto" and on_this_machine(self.engine.url)
        )
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.reader = self._reader(url)  # for reads (`service/reads.py`)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self.sessions() as session, session.begin():
            yield session

    def _reader(self, url: str) -> Engine:
        # On a server, each statement of a read its own transaction: at READ COMMITTED, PostgreSQL's
        # default, each statement of a transaction reads its own snapshot anyway, so nothing read changes,
        # and that saves the BEGIN and ROLLBACK round trips; and psycopg keeps its prepared statements,
        # which a ROLLBACK drops.
        if self.embedded:
            return self.engine
        if self.reads_on_loop:
            return make_loop_reader(url)
        return self.engine.execution_options(isolation_level="AUTOCOMMIT")

    def forget_connections(self) -> None:
        """In a forked child: drop the parent's pooled connections without closing them under it."""
        self.engine.dispose(close=False)
        self.reader.dispose(close=False)


def on_this_machine(url: URL) -> bool:
    """Whether the database is a file, or a server reached over loopback or a Unix socket."""
    host = url.host or url.query.get("host")
    return url.get_backend_name() == "sqlite" or not host or host.startswith("/") or is_loopback(host)


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


def make_loop_reader(url: str) -> Engine:
    """A database server's engine for reads on an event loop, which run one at a time: one connection
    (more only while another loop reads too), in autocommit, not pinged at each checkout (a round trip):
    a read on a connection the server dropped runs again on a new one (`service/reads.py`)."""
    autocommit = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
    return create_engine(url, pool_size=1, max_overflow=-1, **autocommit)


def _tune_sqlite(dbapi_connection, _record) -> None:
    # WAL lets the API read while a worker writes; the busy timeout makes writers queue, not fail.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
