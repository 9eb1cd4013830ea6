"""Every file and job belongs to a tenant; these are the only ways routes reach them.

Another tenant's id answers exactly as an id that does not exist (404).
"""

from typing import TypeVar

from sqlalchemy import Connection, Select, select
from sqlalchemy.orm import Session

from core.errors import not_found
from core.models import File, Job

KIND = {File: "file", Job: "job"}
Row = TypeVar("Row", File, Job)


def owned_by(model: type[File | Job], tenant_id: str) -> Select:
    return select(model).where(model.tenant_id == tenant_id)


def get_owned(
    session: Session | Connection,
    model: type[Row],
    tenant_id: str,
    id_: str,
    param: str | None = None,
    columns=(),
) -> Row:
    """The tenant's object with this id; with `columns`, only those, as a row (no ORM object, so a plain
    connection will do)."""
    query = owned_by(model, tenant_id).where(model.id == id_)
    row = session.execute(query.with_only_columns(*columns)).first() if columns else session.scalar(query)
    if row is None:
        raise not_found(KIND[model], id_, param)
    return row
