"""Cursor pagination: `?limit=` (1..100) and `?after=<id>` over any table with `pk` and `id` columns."""

from typing import Annotated

from fastapi import Query
from sqlalchemy import Connection, Select, select
from sqlalchemy.orm import Session

from core.errors import RequestError

Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1 to 100.")]
After = Annotated[
    str | None,
    Query(max_length=64, description="Return items after this id (the last of the previous page)."),
]


def paginate(
    session: Session | Connection,
    query: Select,
    model,
    after: str | None,
    limit: int,
    newest_first: bool = True,
    columns=(),
):
    """One page of `query`'s rows and whether more follow; `after` must be an id the query itself returns.
    With `columns`, only those are read, as rows (no ORM objects, so a plain connection will do)."""
    order = model.pk.desc() if newest_first else model.pk.asc()
    if after is not None:
        cursor = session.scalar(
            select(model.pk).where(model.id == after, model.pk.in_(query.with_only_columns(model.pk)))
        )
        if cursor is None:
            raise RequestError(
                422, "invalid_cursor", f"`after` names no item of this list: {after!r}.", "after"
            )
        query = query.where(model.pk < cursor if newest_first else model.pk > cursor)
    query = query.order_by(order).limit(limit + 1)
    rows = list(session.execute(query.with_only_columns(*columns)) if columns else session.scalars(query))
    return rows[:limit], len(rows) > limit
