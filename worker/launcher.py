"""A job over several devices (`training.devices` > 1) runs in a child process, `python -m worker.launcher`,
which runs torchrun (`torch.distributed.run`) in itself to start one `worker.rank` process per device: a
Celery prefork child cannot start multiprocessing children, and NCCL wants fresh processes.

The task writes what the ranks need into the job's folder (`launch.json`: the settings, the job and its
files, already local), waits for the launcher while its heartbeat goes on, and reads back rank 0's result
or the first rank's failure as the exception a one-device job would have raised. The launcher and the
ranks die with the process that started them (PR_SET_PDEATHSIG): a worker killed mid-training leaves no
rank training.
"""

import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr
from torch.distributed.run import main as torchrun

from core.config import Settings
from core.models import Job
from engine.pipeline import DistillResult
from engine.plan.errors import JobCancelled, JobFailed
from engine.plan.specs import JobFiles
from worker.memory_cgroup import oom_kills

LAUNCH_FILE = "launch.json"
RESULT_FILE = "result.json"  # rank 0's, when the job succeeded
FAILURE_FILE = "failure.json"  # a rank's, when it raised
PARENT_PID = "DISTILL_LAUNCHER_PID"  # in the ranks' environment: the process they die with
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
CANCELLED = "cancelled"  # a failure's code for JobCancelled


class TrainingProcessLost(Exception):
    """A rank died without saying why (a signal: the kernel's out-of-memory killer, or a kill)."""

    def __init__(self, how: str, out_of_memory: bool):
        super().__init__(how)
        self.how, self.out_of_memory = how, out_of_memory


class RankFailed(Exception):
    """A rank raised an error other than a `JobFailed` or `JobCancelled`; its traceback is in the log."""


def distill_on_ranks(
    settings: Settings, job: Job, devices: int, files: JobFiles, file_ids: list[str], out_dir: Path
) -> DistillResult:
    """Run the job on `devices` ranks; rank 0's result, or the exception that ended it."""
    launch = {
        "settings": settings_values(settings),
        "job_id": job.id,
        "files": files_values(files),
        "file_ids": file_ids,
    }
    (out_dir / LAUNCH_FILE).write_text(json.dumps(launch))
    kills_before = oom_kills()
    command = [sys.executable, "-m", "worker.launcher", str(os.getpid()), str(devices), str(out_dir)]
    exit_code = subprocess.run(command, check=False).returncode
    return rank_outcome(out_dir, exit_code, out_of_memory=(oom_kills() or 0) > (kills_before or 0))


def settings_values(settings: Settings) -> dict:
    """The settings as JSON values, secrets included: the ranks build theirs from them (the job's folder
    is readable by this user alone)."""
    secrets = {name: value.get_secret_value() for name, value in settings if isinstance(value, SecretStr)}
    return settings.model_dump(mode="json") | secrets


def files_values(files: JobFiles) -> dict:
    """The job's files, already local paths, as JSON values."""
    return {
        "teachers": [str(path) for path in files.teachers],
        "train": str(files.train),
        "validation": None if files.validation is None else str(files.validation),
        "tokenizer": None if files.tokenizer is None else str(files.tokenizer),
        "digests": {str(path): sha256 for path, sha256 in files.digests.items()},
    }


def job_files(saved: dict) -> JobFiles:
    """The job's files as `files_values` wrote them."""

    def path(name: str | None) -> Path | None:
        return None if name is None else Path(name)

    return JobFiles(
        teachers=[Path(name) for name in saved["teachers"]],
        train=Path(saved["train"]),
        validation=path(saved["validation"]),
        tokenizer=path(saved["tokenizer"]),
        digests={Path(name): sha256 for name, sha256 in saved["digests"].items()},
    )


def rank_outcome(out_dir: Path, exit_code: int, out_of_memory: bool) -> DistillResult:
    """Rank 0's result; else the lowest rank's failure raised, or `TrainingProcessLost` if none said why."""
    result = rank_folder(out_dir, 0) / RESULT_FILE
    if exit_code == 0 and result.is_file():
        saved = json.loads(result.read_text())
        artifacts = {name: Path(path) for name, path in saved["artifacts"].items()}
        return DistillResult(metrics=saved["metrics"], series=saved["series"], artifacts=artifacts)
    failures = sorted(out_dir.glob(f"rank-*/{FAILURE_FILE}"), key=lambda path: rank_number(path.parent))
    if not failures:
        raise TrainingProcessLost(
            f"a rank ending without a word (torchrun exit code {exit_code})", out_of_memory
        )
    failure = json.loads(failures[0].read_text())
    if failure["code"] == CANCELLED:
        raise JobCancelled(failure["message"])
    if failure["code"] == RankFailed.__name__:
        raise RankFailed(failure["message"])
    raise JobFailed(failure["code"], failure["message"])


def result_values(result: DistillResult) -> dict:
    """What `rank_outcome` reads back of rank 0's result."""
    artifacts = {name: str(path) for name, path in result.artifacts.items()}
    return {"metrics": result.metrics, "series": result.series, "artifacts": artifacts}


def failure_of(error: BaseException, rank: int) -> dict:
    """What `rank_outcome` reads back of a rank's error."""
    if isinstance(error, JobCancelled):
        return {"code": CANCELLED, "message": str(error)}
    if isinstance(error, JobFailed):
        return {"code": error.code, "message": error.message}
    return {"code": RankFailed.__name__, "message": f"rank {rank}: {type(error).__name__}: {error}"}


def rank_folder(out_dir: Path, rank: int) -> Path:
    return out_dir / f"rank-{rank}"


def rank_number(folder: Path) -> int:
    return int(folder.name.removeprefix("rank-"))


def die_with_parent(parent_pid: int) -> None:
    """Be SIGKILLed when the parent process dies, or now if it died already (Linux; elsewhere a dead
    worker's ranks train on until they end)."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)


def main(worker_pid: str, devices: str, out_dir: str) -> None:
    """torchrun, in this process, starting a `worker.rank` process per device."""
    die_with_parent(int(worker_pid))
    os.environ[PARENT_PID] = str(os.getpid())
    launch = str(Path(out_dir) / LAUNCH_FILE)
    torchrun(["--standalone", f"--nproc-per-node={devices}", "-m", "worker.rank", launch])


if __name__ == "__main__":
    main(*sys.argv[1:])
