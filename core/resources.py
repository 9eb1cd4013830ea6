"""Everything a process runs against, built from its settings: the database, the storage and the job
queue. The API, the workers and the CLI each make one and hand it down; nothing reaches for a global."""

from dataclasses import dataclass
from pathlib import Path

from core.config import S3_SCHEME, Settings
from core.db import Database
from core.queue import JobQueue
from core.s3_storage import S3Storage
from core.storage import LocalStorage, Storage


@dataclass(frozen=True)
class Resources:
    settings: Settings
    database: Database
    storage: Storage
    queue: JobQueue

    @classmethod
    def from_settings(cls, settings: Settings) -> "Resources":
        return cls(
            settings=settings,
            database=Database(
                settings.resolved_database_url,
                connections=settings.threads,
                reads_on_loop=settings.reads_on_loop,
            ),
            storage=make_storage(settings.resolved_storage_url),
            queue=JobQueue(settings),
        )


def make_storage(url: str) -> Storage:
    """The storage at `url`: a bucket for `s3://bucket/prefix`, else a local folder."""
    return S3Storage.from_url(url) if url.startswith(S3_SCHEME) else LocalStorage(Path(url))
