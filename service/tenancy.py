"""Every file and job belongs to a tenant; these are the only ways routes reach them.

Another tenant's id answers exactly as an id that does not exist (404).
"""

from typing import TypeVar

from sqlalchemy import Connection, Select, bindparam, select
from sqlalchemy.orm import Session

from core.errors import not_found
from core.models import File, Job

KIND = {File: "file", Job: "job"}
Row = TypeVar("Row", File, Job)


def owned_by(model: type[File | Job], tenant_id: str) -> Select:
    return select(model).where(model.tenant_id == tenant_id)


def owned_one(model: type[File | Job], columns=()) -> Select:
    """What `get_owned` reads: the tenant's object of an id, both bound at each read; with `columns`, only
    those, as a row (no ORM object, so a plain connection will do). A route that reads often builds its
    statement once (building and hashing a statement costs more than running it, on SQLite)."""
    query = owned_by(model, bindparam("tenant_id")).where(model.id == bindparam("id"))
    return query.with_only_columns(*columns) if columns else query


OBJECTS = {model: owned_one(model) for model in KIND}


def get_owned(
    session: Session | Connection,
    model: type[Row],
    tenant_id: str,
    id_: str,
    param: str | None = None,
    statement: Select | None = None,
) -> Row:
    """The tenant's object with this id, by `statement` if given (an `owned_one` of some columns)."""
    params = {"tenant_id": tenant_id, "id": id_}
    if statement is None:
        row = session.scalar(OBJECTS[model], params)
    else:
        row = session.execute(statement, params).first()
    if row is None:
        raise not_found(KIND[model], id_, param)
    return row
