"""Where the read routes read: `await read(database, fn, *args)` is `fn(connection, *args)` on a
connection of the database.

On SQLite, the embedded default, it runs on the event loop itself. A read route's few indexed queries
there take tens of microseconds of this process's CPU, with no server to wait for, where a hop to the
thread pool and back costs more than that, and under load the pool's threads contend with the loop for
the GIL. Against a database server each query waits for a network round trip, which on the loop would
hold up every other request: there it runs on the thread pool, as the other routes' database work does.
"""

from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from core.db import Database

T = TypeVar("T")


async def read(database: Database, fn: Callable[..., T], *args) -> T:
    if database.embedded:
        return _on_connection(database, fn, *args)
    return await run_in_threadpool(_on_connection, database, fn, *args)


def _on_connection(database: Database, fn: Callable[..., T], *args) -> T:
    with database.engine.connect() as connection:
        return fn(connection, *args)
