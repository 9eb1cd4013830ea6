"""A job's checkpoint in the storage: one object, replaced at every save, deleted when the job ends."""

import shutil
from pathlib import Path

from core.storage import Storage, job_key, read_chunks

CHECKPOINT = "checkpoint.pt"  # never an artifact's name


class StoredCheckpoint:
    """The engine's `CheckpointStore` for one job (the worker saves and fetches; whoever ends the job
    deletes it)."""

    def __init__(self, storage: Storage, tenant_id: str, job_id: str):
        self.storage = storage
        self.key = job_key(tenant_id, job_id, CHECKPOINT)

    def save(self, path: Path) -> None:
        with path.open("rb") as stream:
            self.storage.write(self.key, read_chunks(stream))

    def fetch(self, path: Path) -> bool:
        try:
            stored = self.storage.open(self.key)
        except FileNotFoundError:
            return False
        with stored, path.open("wb") as out:
            shutil.copyfileobj(stored, out)
        return True

    def delete(self) -> None:
        self.storage.delete(self.key)
