"""The launcher and each rank die with the process that started them, so that a worker killed
mid-training leaves no rank training."""

import ctypes
import os
import signal
import sys

LAUNCHER_PID = "DISTILL_LAUNCHER_PID"  # in the ranks' environment: the process they die with
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Be SIGKILLed when the parent process dies, or now if it died already (Linux; elsewhere a dead
    worker's ranks train on until they end)."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)
