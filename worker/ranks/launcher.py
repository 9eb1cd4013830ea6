"""The launcher process, `python -m worker.ranks.launcher WORKER_PID DEVICES LAUNCH_FILE`: it dies with the
worker's process that started it and runs torchrun (`torch.distributed.run`) in itself, which starts one
`worker.ranks.rank` process per device. A Celery prefork child cannot start multiprocessing children, and
NCCL wants fresh processes."""

import os
import sys

from torch.distributed.run import main as torchrun

from worker.ranks.lifeline import LAUNCHER_PID, die_with_parent


def main(worker_pid: str, devices: str, launch_file: str) -> None:
    die_with_parent(int(worker_pid))
    os.environ[LAUNCHER_PID] = str(os.getpid())
    torchrun(["--standalone", f"--nproc-per-node={devices}", "-m", "worker.ranks.rank", launch_file])


if __name__ == "__main__":
    main(*sys.argv[1:])
