"""Cursor pagination: `?limit=` (1..100) and `?after=<id>` over any table with `pk` and `id` columns."""

from typing import Annotated

from fastapi import Query
from sqlalchemy import Connection, Select, bindparam, select
from sqlalchemy.orm import Session

from core.errors import unprocessable
from service.tenancy import owned_by

Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1 to 100.")]
After = Annotated[
    str | None,
    Query(max_length=64, description="Return items after this id (the last of the previous page)."),
]


class Pages:
    """Pages of `query`'s rows, newest (or oldest) first; `after` must be an id the query itself returns.
    With `columns`, only those are read, as rows (no ORM objects, so a plain connection will do).

    The statements are built here, once: a read route that lists often keeps its `Pages`, its query's
    values bound as parameters at each read (building and hashing a statement costs more than running
    it, on SQLite)."""

    def __init__(self, query: Select, model, columns=(), newest_first: bool = True):
        pk, cursor = model.pk, bindparam("cursor")
        order, beyond = (pk.desc(), pk < cursor) if newest_first else (pk.asc(), pk > cursor)
        first = query.order_by(order).limit(bindparam("rows"))
        self.first = first.with_only_columns(*columns) if columns else first
        self.after = self.first.where(beyond)
        self.cursor = select(model.pk).where(
            model.id == bindparam("after"), model.pk.in_(query.with_only_columns(model.pk))
        )
        self.rows = bool(columns)

    def page(
        self, session: Session | Connection, after: str | None, limit: int, **params
    ) -> tuple[list, bool]:
        """One page and whether more follow; `params`: the values of the query's parameters."""
        params["rows"] = limit + 1
        statement = self.first
        if after is not None:
            params["cursor"] = session.scalar(self.cursor, params | {"after": after})
            if params["cursor"] is None:
                message = f"`after` names no item of this list: {after!r}."
                raise unprocessable("invalid_cursor", message, param="after")
            statement = self.after
        rows = (session.execute(statement, params) if self.rows else session.scalars(statement, params)).all()
        return rows[:limit], len(rows) > limit


class TenantPages:
    """Pages of a tenant's rows of `model` (as `Pages`, of `columns`): all of them, or those whose `column`
    holds the value a list is filtered by (a job's status, a file's purpose)."""

    def __init__(self, model, columns, column):
        tenants = owned_by(model, bindparam("tenant_id"))
        self.all = Pages(tenants, model, columns)
        self.filtered = Pages(tenants.where(column == bindparam("value")), model, columns)

    def page(
        self, connection: Connection, tenant_id: str, value: str | None, after: str | None, limit: int
    ) -> tuple[list, bool]:
        if value is None:
            return self.all.page(connection, after, limit, tenant_id=tenant_id)
        return self.filtered.page(connection, after, limit, tenant_id=tenant_id, value=value)


def paginate(
    session: Session | Connection,
    query: Select,
    model,
    after: str | None,
    limit: int,
    newest_first: bool = True,
    columns=(),
):
    """One page of `query`'s rows and whether more follow, as `Pages`, its statements built for this read."""
    return Pages(query, model, columns, newest_first).page(session, after, limit)
