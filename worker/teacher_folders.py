"""`hf` teachers as the engine loads them: each uploaded archive unpacked into a folder of its own for the
job's run, the upload check's rules applied again while writing (the archive bounds, the model types)."""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.config import Settings
from engine.plan.errors import JobFailed
from engine.plan.hf_archive import HFArchiveRejected, unpack_hf_archive


@contextmanager
def unpacked_teacher(archive: Path, settings: Settings, field: str) -> Iterator[Path]:
    """The `save_pretrained` folder that `archive` holds, until the context closes."""
    with tempfile.TemporaryDirectory(prefix="distill-teacher-") as folder:
        try:
            path, _folder = unpack_hf_archive(
                archive, Path(folder), settings.hf_archive_limits, settings.hf_model_types
            )
        except HFArchiveRejected as rejected:
            raise JobFailed(
                "teacher_load_failed", f"{field}'s archive cannot be unpacked: {rejected}", f"{field}.file_id"
            ) from None
        yield path
