"""A job's checkpoint in the storage: one object, replaced at every save, deleted when the job ends
(kept when it ran out of time, for a job that resumes from it)."""

import shutil
from pathlib import Path

from core.storage import Storage, job_key, read_chunks

CHECKPOINT = "checkpoint.pt"  # never an artifact's name


class StoredCheckpoint:
    """The engine's `CheckpointStore` for one job (the worker saves and fetches; whoever ends the job
    deletes it)."""

    def __init__(self, storage: Storage, tenant_id: str, job_id: str, *, resumes: str | None = None):
        """`resumes`: the earlier job (`resume_from`) whose checkpoint this job goes on from until it saves
        its own."""
        self.storage = storage
        self.key = job_key(tenant_id, job_id, CHECKPOINT)
        self.earlier_key = None if resumes is None else job_key(tenant_id, resumes, CHECKPOINT)

    def save(self, path: Path) -> None:
        with path.open("rb") as stream:
            self.storage.write(self.key, read_chunks(stream))
        if self.earlier_key is not None:  # this job's own checkpoint goes on from here
            self.storage.delete(self.earlier_key)
            self.earlier_key = None

    def fetch(self, path: Path) -> bool:
        return any(self._fetch(key, path) for key in (self.key, self.earlier_key) if key is not None)

    def kept(self) -> bool:
        try:
            self.storage.open(self.key).close()
        except FileNotFoundError:
            return False
        return True

    def _fetch(self, key: str, path: Path) -> bool:
        try:
            stored = self.storage.open(key)
        except FileNotFoundError:
            return False
        with stored, path.open("wb") as out:
            shutil.copyfileobj(stored, out)
        return True

    def delete(self) -> None:
        self.storage.delete(self.key)
