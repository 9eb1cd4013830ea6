"""The teacher-output cache in the storage: entries found by tenant and key, kept within a byte budget by
evicting the least recently used (never one an unfinished job reads), and deleted with their files; on
SQLite and PostgreSQL."""

from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.models import Job, TeacherCacheEntry
from core.teacher_cache_store import StoredTeacherCache, delete_folders, forget_file
from tests.job_rows import set_job
from tests.storages import stored_keys


@pytest.fixture
def caches(database, storage):
    """`caches(status, tenant, files, max_bytes)`: the store of a new job in that status."""
    stack = ExitStack()

    def make(status="running", tenant="acme", files=("file-t", "file-d"), max_bytes=1000):
        with database.transaction() as session:
            job = Job(request={}, progress={}, tenant_id=tenant)
            session.add(job)
            session.flush()
            job_id, job_pk = job.id, job.pk
        set_job(database, job_id, status=status)
        cache = StoredTeacherCache(database, storage, max_bytes, tenant, job_pk, list(files), stack)
        cache.job_id = job_id
        return cache

    with database.transaction() as session:
        session.query(TeacherCacheEntry).delete()
    with stack:
        yield make


def table(folder: Path, size: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "logits.bin").write_bytes(b"x" * (size - 2))
    (folder / "manifest.json").write_bytes(b"{}")
    return folder


def cache_folders(storage) -> set[str]:
    return {key.rsplit("/", 1)[0] for key in stored_keys(storage)}


def keys_kept(database) -> set[str]:
    with database.transaction() as session:
        return set(session.scalars(select(TeacherCacheEntry.key)))


def test_a_kept_table_is_found_by_the_same_tenant_only(caches, tmp_path):
    caches().save("k1", table(tmp_path / "t", 100))
    found = caches().fetch("k1")
    assert (found / "logits.bin").read_bytes() == b"x" * 98 and (found / "manifest.json").exists()
    assert caches(tenant="other").fetch("k1") is None
    assert caches().fetch("k2") is None


def test_the_least_recently_used_go_first_when_the_budget_is_full(caches, database, storage, tmp_path):
    first, second = caches(status="succeeded"), caches(status="failed")
    first.save("a", table(tmp_path / "a", 400))
    second.save("b", table(tmp_path / "b", 400))
    caches(status="succeeded").fetch("b")
    caches(status="succeeded").fetch("a")  # used last: b goes before it
    assert caches().save("c", table(tmp_path / "c", 400)) is None
    assert keys_kept(database) == {"a", "c"}
    assert len(cache_folders(storage)) == 2  # b's files are gone


def test_no_entry_an_unfinished_job_reads_is_evicted(caches, database, tmp_path):
    caches(status="running").save("a", table(tmp_path / "a", 400))
    caches(status="queued").save("b", table(tmp_path / "b", 400))
    why = caches().save("c", table(tmp_path / "c", 400))
    assert (
        why == "DISTILL_TEACHER_CACHE_MAX_BYTES (1,000 bytes) is taken by entries that unfinished jobs read"
    )
    assert keys_kept(database) == {"a", "b"}


def test_a_table_larger_than_the_budget_is_not_kept(caches, database, tmp_path):
    why = caches(max_bytes=50).save("big", table(tmp_path / "big", 100))
    assert why == "its 100 bytes exceed DISTILL_TEACHER_CACHE_MAX_BYTES (50 bytes)"
    assert keys_kept(database) == set()


def test_the_same_table_kept_twice_is_one_entry(caches, database, storage, tmp_path):
    one, other = caches(), caches()
    assert one.save("k", table(tmp_path / "one", 100)) is None
    assert other.save("k", table(tmp_path / "other", 100)) is None
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(TeacherCacheEntry)) == 1
    assert len(cache_folders(storage)) == 1


def test_deleting_a_file_deletes_the_entries_made_from_it(caches, database, storage, tmp_path):
    caches(files=["file-t", "file-d"]).save("from-d", table(tmp_path / "d", 100))
    caches(files=["file-t", "file-e"]).save("from-e", table(tmp_path / "e", 100))
    caches(files=["file-t2", "file-d2"]).fetch(
        "from-e"
    )  # read with files of the same content: made from them too
    with database.transaction() as session:
        folders = forget_file(session, "file-d2")
    delete_folders(storage, folders)
    assert keys_kept(database) == {"from-d"}
    assert len(cache_folders(storage)) == 1


def test_an_entry_whose_files_are_gone_is_forgotten(caches, database, storage, tmp_path):
    caches().save("k", table(tmp_path / "t", 100))
    delete_folders(storage, list(cache_folders(storage)))
    assert caches().fetch("k") is None
    assert keys_kept(database) == set()
