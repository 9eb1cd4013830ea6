"""How the API reads files for their bodies (`GET /v1/files`, `GET /v1/files/{id}`): rows of the columns
a body shows, read by statements built once, each file's body encoded once and kept
(`service.kept_bodies`). A file is never changed once stored, only deleted, and a read finds no deleted
file, so its kept body always holds."""

from sqlalchemy import Connection, Row

from core.models import File
from service.kept_bodies import KeptBodies
from service.pagination import TenantPages
from service.responses import encoded, encoded_page
from service.schemas import FileObject
from service.tenancy import get_owned, owned_one

COLUMNS = (File.id, File.purpose, File.filename, File.bytes, File.sha256, File.format, File.created_at)
ONE = owned_one(File, COLUMNS)
PAGES = TenantPages(File, COLUMNS, File.purpose)
UNCHANGING = None  # a file's state, for `KeptBodies`


def file_body(connection: Connection, kept: KeptBodies, tenant_id: str, file_id: str) -> bytes:
    """The tenant's file of this id, encoded (404 if there is none)."""
    return file_bodies([get_owned(connection, File, tenant_id, file_id, statement=ONE)], kept)[0]


def page_body(
    connection: Connection,
    kept: KeptBodies,
    tenant_id: str,
    purpose: str | None,
    after: str | None,
    limit: int,
) -> bytes:
    """A page of the tenant's files (of `purpose`, if given), encoded."""
    rows, has_more = PAGES.page(connection, tenant_id, purpose, after, limit)
    return encoded_page(file_bodies(rows, kept), has_more)


def file_bodies(rows: list[Row], kept: KeptBodies) -> list[bytes]:
    """The encoded body of each row of `COLUMNS`: as kept, else encoded and kept."""
    ids = [row.id for row in rows]
    bodies = kept.bodies(dict.fromkeys(ids, UNCHANGING))
    for row in (row for row, file_id in zip(rows, ids, strict=True) if file_id not in bodies):
        bodies[row.id] = encoded(FileObject.model_validate(row, from_attributes=True))
        kept.keep(row.id, UNCHANGING, bodies[row.id])
    return [bodies[file_id] for file_id in ids]
