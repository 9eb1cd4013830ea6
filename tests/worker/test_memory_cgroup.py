"""A worker reads its cgroup's memory limit and its count of OOM kills: met here for real, in a cgroup
of 256 MiB whose child process allocates more."""

import json
import subprocess
import sys

from tests.cgroups import memory_cgroup
from tests.stack import ROOT

IN_CGROUP = """
import json, subprocess, sys
from worker.memory_cgroup import OomKillWatch, memory_limit, oom_kills
watch = OomKillWatch()
watch.started("task")
before = oom_kills()
hog = subprocess.run([sys.executable, "-c", "x = [bytearray(2**20) for _ in range(1024)]"])
seen = {"limit": memory_limit(), "before": before, "after": oom_kills(), "returncode": hog.returncode}
print(json.dumps(seen | {"struck": watch.struck("task"), "unknown": watch.struck("other")}))
"""


def test_the_oom_killers_kill_in_the_cgroup_is_counted_and_its_limit_read():
    with memory_cgroup(256 * 1024**2) as cgroup:
        join = f"open('{cgroup / 'cgroup.procs'}', 'w').write(str(__import__('os').getpid()))"
        process = subprocess.run(
            [sys.executable, "-c", f"{join}\n{IN_CGROUP}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert process.returncode == 0, process.stderr
    seen = json.loads(process.stdout)
    assert seen == {"limit": 256 * 1024**2, "before": 0, "after": 1, "returncode": -9, "struck": True,
                    "unknown": False}  # fmt: skip
