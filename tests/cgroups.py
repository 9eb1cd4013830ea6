"""A memory cgroup of its own for a process under test, so the kernel's OOM killer can be met for real.

Made below this process's own memory cgroup (v2 or v1); where none can be made (no root, no memory
controller), the test is `unavailable`: it fails under CI=true and skips elsewhere.
"""

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers import unavailable
from worker.memory_cgroup import own_cgroup


@contextmanager
def memory_cgroup(limit_bytes: int) -> Iterator[Path]:
    """A new cgroup's folder whose processes may use `limit_bytes` of memory; removed afterwards."""
    version, parent = _parent()
    folder = parent / f"distill-test-{secrets.token_hex(4)}"
    try:
        folder.mkdir()
        limit_file = "memory.max" if version == "v2" else "memory.limit_in_bytes"
        (folder / limit_file).write_text(str(limit_bytes))
    except OSError as exc:
        _remove(folder)
        unavailable(f"a memory cgroup under {parent}", exc)
    try:
        yield folder
    finally:
        _remove(folder)


def _parent() -> tuple[str, Path]:
    v2, v1 = own_cgroup("v2"), own_cgroup("v1")
    if v2 is not None and "memory" in _read(v2 / "cgroup.subtree_control").split():
        return "v2", v2
    if v1 is not None:
        return "v1", v1
    unavailable("a memory cgroup", FileNotFoundError(f"no memory controller for pid {os.getpid()}"))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _remove(folder: Path) -> None:
    """rmdir, once the cgroup's processes are gone (a killed process leaves it a moment later)."""
    for _ in range(50):
        try:
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)
