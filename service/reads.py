"""Where the read routes read: `await read(database, fn, *args)` is `fn(connection, *args)` on a
connection for reads (`Database.reader`: on a database server, one statement a transaction, no ping).

On SQLite, and on a database server on this machine, it runs on the event loop itself
(`Settings.reads_on_loop`). A read route's few indexed queries take tens of microseconds of this
process's CPU there, plus, for a server, one round trip over loopback, where a hop to a thread and back
costs more than the read: under load the threads contend with the loop for the GIL (on PostgreSQL at 64
connections, 1.6 ms of this process's CPU a status GET on the threads against 1.1 ms on the loop). Against
a server across a network each query waits for a round trip that on the loop would hold up every other
request: there it runs on the thread pool, as the other routes' database work does.
"""

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from core.db import Database

T = TypeVar("T")


async def read(database: Database, fn: Callable[..., T], *args) -> T:
    if database.reads_on_loop:
        return _on_connection(database, fn, *args)
    return await run_in_threadpool(_on_connection, database, fn, *args)


def _on_connection(database: Database, fn: Callable[..., T], *args) -> T:
    try:
        return _read(database, fn, *args)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    # The server dropped the connection (a restart, an idle timeout): SQLAlchemy has let the pool's
    # connections go, and a read changes nothing, so it runs again, on a new one.
    return _read(database, fn, *args)


def _read(database: Database, fn: Callable[..., T], *args) -> T:
    with database.reader.connect() as connection:
        return fn(connection, *args)
