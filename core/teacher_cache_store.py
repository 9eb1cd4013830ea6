"""The teacher-output cache in the storage: the engine's `TeacherCacheStore` for one job.

An entry is a folder of files (one teacher's outputs over one dataset, see `engine.teachers.cache_tables`)
and a row of `teacher_cache_entries`, found by its tenant and the engine's key: tenants never share one. All
entries together stay within DISTILL_TEACHER_CACHE_MAX_BYTES: the least recently used go first, never one
that an unfinished job reads. Deleting a file deletes the entries made from it (`forget_file`).
"""

import time
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db import Database
from core.lifecycle import UNFINISHED
from core.models import Job, TeacherCacheEntry, TeacherCacheFile, TeacherCacheReader, new_id
from core.storage import Storage, read_chunks


class StoredTeacherCache:
    """The cache as one job (`job_pk`, reading the files `file_ids`) of `tenant_id` sees it. Folders it
    fetches stay on local disk until `stack` closes."""

    def __init__(
        self,
        database: Database,
        storage: Storage,
        max_bytes: int,
        tenant_id: str,
        job_pk: int,
        file_ids: list[str],
        stack: ExitStack,
    ):
        self.database, self.storage, self.max_bytes = database, storage, max_bytes
        self.tenant_id, self.job_pk, self.file_ids, self.stack = tenant_id, job_pk, file_ids, stack

    def fetch(self, key: str) -> Path | None:
        with self.database.transaction() as session:
            entry = session.scalar(
                select(TeacherCacheEntry).where(
                    TeacherCacheEntry.tenant_id == self.tenant_id, TeacherCacheEntry.key == key
                )
            )
            if entry is None:
                return None
            entry.last_used_at = time.time()
            self._read_by_this_job(session, entry.pk)
            entry_pk, storage_key = entry.pk, entry.storage_key
        folder = self.stack.enter_context(self.storage.local_path(storage_key))
        if folder.is_dir():
            return folder
        with self.database.transaction() as session:  # its files are gone: forget it, and compute anew
            session.execute(delete(TeacherCacheEntry).where(TeacherCacheEntry.pk == entry_pk))
        return None

    def save(self, key: str, folder: Path) -> str | None:
        size = sum(path.stat().st_size for path in folder.iterdir())
        if size > self.max_bytes:
            return (
                f"its {megabytes(size)} exceed DISTILL_TEACHER_CACHE_MAX_BYTES ({megabytes(self.max_bytes)})"
            )
        if not self._make_room(size):
            return (
                f"DISTILL_TEACHER_CACHE_MAX_BYTES ({megabytes(self.max_bytes)}) is taken by entries that "
                "unfinished jobs read"
            )
        storage_key = f"caches/{self.tenant_id}/{new_id('cache')}"
        for path in folder.iterdir():
            with path.open("rb") as stream:
                self.storage.write(f"{storage_key}/{path.name}", read_chunks(stream))
        entry = TeacherCacheEntry(tenant_id=self.tenant_id, key=key, storage_key=storage_key, bytes=size)
        try:
            with self.database.transaction() as session:
                session.add(entry)
                session.flush()
                self._read_by_this_job(session, entry.pk)
        except IntegrityError:  # another job kept the same outputs first: theirs serve
            self.storage.delete(storage_key)
        return None

    def _read_by_this_job(self, session: Session, entry_pk: int) -> None:
        """Mark the entry as read by this job (never evicted while it runs) and as made from its files."""
        insert_new(session, TeacherCacheReader, [{"entry_pk": entry_pk, "job_pk": self.job_pk}])
        insert_new(session, TeacherCacheFile, [{"entry_pk": entry_pk, "file_id": f} for f in self.file_ids])

    def _make_room(self, size: int) -> bool:
        """Evict the least recently used entries no unfinished job reads until `size` more bytes fit."""
        with self.database.transaction() as session:
            used = session.scalar(select(func.coalesce(func.sum(TeacherCacheEntry.bytes), 0)))
            read_now = (
                select(TeacherCacheReader.entry_pk)
                .join(Job, Job.pk == TeacherCacheReader.job_pk)
                .where(Job.status.in_(UNFINISHED))
            )
            candidates = session.execute(
                select(TeacherCacheEntry.pk, TeacherCacheEntry.storage_key, TeacherCacheEntry.bytes)
                .where(TeacherCacheEntry.pk.not_in(read_now))
                .order_by(TeacherCacheEntry.last_used_at)
            ).all()
            evicted = []
            for pk, storage_key, entry_bytes in candidates:
                if used + size <= self.max_bytes:
                    break
                evicted.append((pk, storage_key))
                used -= entry_bytes
            session.execute(
                delete(TeacherCacheEntry).where(TeacherCacheEntry.pk.in_([pk for pk, _ in evicted]))
            )
        delete_folders(self.storage, [storage_key for _, storage_key in evicted])
        return used + size <= self.max_bytes


def forget_file(session: Session, file_id: str) -> list[str]:
    """Delete the rows of the entries made from `file_id`; returns their folders, to delete from the
    storage once the session commits."""
    made_from = select(TeacherCacheFile.entry_pk).where(TeacherCacheFile.file_id == file_id)
    folders = session.scalars(
        select(TeacherCacheEntry.storage_key).where(TeacherCacheEntry.pk.in_(made_from))
    ).all()
    session.execute(delete(TeacherCacheEntry).where(TeacherCacheEntry.pk.in_(made_from)))
    return list(folders)


def delete_folders(storage: Storage, folders: list[str]) -> None:
    for folder in folders:
        storage.delete(folder)


def insert_new(session: Session, table: type, rows: list[dict]) -> None:
    """Insert the rows whose primary key is not there yet (a concurrent job may insert the same)."""
    if not rows:
        return
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(table).on_conflict_do_nothing(), rows)


def megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 100_000 else f"{size:,} bytes"
