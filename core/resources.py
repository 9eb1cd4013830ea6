"""Everything a process runs against, built from its settings: the database, the storage and the job
queue. The API, the workers and the CLI each make one and hand it down; nothing reaches for a global."""

from dataclasses import dataclass

from core.config import Settings
from core.db import Database
from core.queue import JobQueue
from core.storage import Storage, make_storage


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
            database=Database(settings.resolved_database_url, connections=settings.threads),
            storage=make_storage(str(settings.storage_root)),
            queue=JobQueue(settings),
        )
