"""The task's side of a job over several devices: it writes `launch.json` into the job's folder, runs the
launcher (`worker.ranks.launcher`) and waits for it while its heartbeat goes on, then reads back rank 0's
result, or the lowest rank's failure as the exception a one-device job would have raised."""

import os
import subprocess
import sys
from pathlib import Path

from engine.pipeline import DistillResult
from worker.memory_cgroup import oom_kills
from worker.ranks.protocol import Launch, lowest_rank_failure, rank_folder, read_result


class TrainingProcessLost(Exception):
    """A rank died without saying why (a signal: the kernel's out-of-memory killer, or a kill)."""

    def __init__(self, how: str, out_of_memory: bool):
        super().__init__(how)
        self.how, self.out_of_memory = how, out_of_memory


def distill_on_ranks(launch: Launch, *, devices: int, out_dir: Path) -> DistillResult:
    """Run the job on `devices` ranks; rank 0's result, or the exception that ended it."""
    launch_file = launch.write(out_dir)
    kills_before = oom_kills()
    command = [
        sys.executable,
        "-m",
        "worker.ranks.launcher",
        str(os.getpid()),
        str(devices),
        str(launch_file),
    ]
    exit_code = subprocess.run(command, check=False).returncode
    return rank_outcome(out_dir, exit_code, out_of_memory=(oom_kills() or 0) > (kills_before or 0))


def rank_outcome(out_dir: Path, exit_code: int, *, out_of_memory: bool) -> DistillResult:
    """Rank 0's result; else the lowest rank's failure raised, or `TrainingProcessLost` if none said why."""
    result = read_result(rank_folder(out_dir, 0))
    if exit_code == 0 and result is not None:
        return result
    failure = lowest_rank_failure(out_dir)
    if failure is None:
        raise TrainingProcessLost(
            f"a rank ending without a word (torchrun exit code {exit_code})", out_of_memory
        )
    raise failure.exception()
