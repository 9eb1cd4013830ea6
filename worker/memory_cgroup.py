"""What the kernel says about this process's memory: its cgroup's limit and how many processes of the
cgroup its out-of-memory killer has killed. Both read the cgroup's own files (v2 or v1), which any
process may read; None where there are none (not Linux, no memory controller)."""

from collections import OrderedDict
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
NO_LIMIT = 2**62  # cgroup v1 writes "no limit" as a huge page-aligned number


class OomKillWatch:
    """Whether the OOM killer struck while a task ran, from the cgroup's count of kills when the task
    arrived and now. One cgroup holds every child of a worker: with several running, one's kill is
    every dying sibling's too."""

    REMEMBERED = 1024  # tasks that end well are never asked about

    def __init__(self):
        self._kills_at_start: OrderedDict[str, int | None] = OrderedDict()

    def started(self, task_id: str) -> None:
        self._kills_at_start[task_id] = oom_kills()
        while len(self._kills_at_start) > self.REMEMBERED:
            self._kills_at_start.popitem(last=False)

    def struck(self, task_id: str) -> bool:
        before, now = self._kills_at_start.pop(task_id, None), oom_kills()
        return before is not None and now is not None and now > before


def oom_kills() -> int | None:
    """Processes of this cgroup (and of the cgroups below it) the OOM killer has killed so far."""
    for folder, events in ((own_cgroup("v2"), "memory.events"), (own_cgroup("v1"), "memory.oom_control")):
        fields = _fields(folder / events) if folder else {}
        if "oom_kill" in fields:
            return int(fields["oom_kill"])
    return None


def memory_limit() -> int | None:
    """The bytes this cgroup may use, or None when it is not limited."""
    for folder, name in ((own_cgroup("v2"), "memory.max"), (own_cgroup("v1"), "memory.limit_in_bytes")):
        try:
            value = (folder / name).read_text().strip() if folder else ""
        except OSError:
            continue
        if value.isdigit():
            return int(value) if int(value) < NO_LIMIT else None
        if value == "max":
            return None
    return None


def own_cgroup(version: str) -> Path | None:
    """The folder of this process's memory cgroup in the hierarchy of `version`, if that is mounted."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _number, controllers, path = line.split(":", 2)
        if version == "v2" and controllers == "":
            folder, mark = CGROUP_ROOT / path.lstrip("/"), "cgroup.controllers"
        elif version == "v1" and "memory" in controllers.split(","):
            folder, mark = CGROUP_ROOT / "memory" / path.lstrip("/"), "memory.limit_in_bytes"
        else:
            continue
        return folder if (folder / mark).exists() else None
    return None


def _fields(path: Path) -> dict[str, str]:
    try:
        return dict(line.split(" ", 1) for line in path.read_text().splitlines() if " " in line)
    except OSError:
        return {}
