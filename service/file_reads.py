"""How the API reads files for their bodies (`GET /v1/files`, `GET /v1/files/{id}`): each file's body
encoded once and kept (`service.kept_bodies`). A file is never changed once stored, only deleted, and a
read finds no deleted file, so its kept body always holds: a read reads the ids (`ONE`, `PAGES`), and the
columns a body shows only for the files whose body is not kept, in one query for a whole page, by
statements built once."""

from sqlalchemy import Connection, bindparam, select

from core.errors import not_found
from core.models import File
from service.kept_bodies import KeptBodies
from service.pagination import TenantPages
from service.responses import encoded, encoded_page
from service.schemas import FileObject
from service.tenancy import get_owned, owned_one

COLUMNS = (
    File.id,
    File.purpose,
    File.filename,
    File.bytes,
    File.sha256,
    File.format,
    File.created_at,
    File.details,
)
ONE = owned_one(File, (File.id,))
PAGES = TenantPages(File, (File.id,), File.purpose)
BODIES = select(*COLUMNS).where(File.id.in_(bindparam("file_ids", expanding=True)))
UNCHANGING = None  # a file's state, for `KeptBodies`


def file_body(connection: Connection, kept: KeptBodies, tenant_id: str, file_id: str) -> bytes:
    """The tenant's file of this id, encoded (404 if there is none)."""
    get_owned(connection, File, tenant_id, file_id, statement=ONE)
    bodies = file_bodies(connection, [file_id], kept)
    if not bodies:  # deleted since
        raise not_found("file", file_id)
    return bodies[0]


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
    return encoded_page(file_bodies(connection, [file_id for (file_id,) in rows], kept), has_more)


def file_bodies(connection: Connection, ids: list[str], kept: KeptBodies) -> list[bytes]:
    """The encoded body of each file of these ids: as kept, else read, encoded and kept (none for a file
    deleted since its id was read)."""
    bodies = kept.bodies(dict.fromkeys(ids, UNCHANGING))
    missing = [file_id for file_id in ids if file_id not in bodies]
    if missing:
        for row in connection.execute(BODIES, {"file_ids": missing}):
            bodies[row.id] = encoded(FileObject.of(row))
            kept.keep(row.id, UNCHANGING, bodies[row.id])
    return [bodies[file_id] for file_id in ids if file_id in bodies]
