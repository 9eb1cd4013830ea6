"""Start the real service as a user would: an API process and a Celery worker process."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from core.resources import make_storage
from core.storage import Storage
from tests.service_client import ServiceClient

ROOT = Path(__file__).resolve().parent.parent
# Settings under which a lost worker is noticed in seconds, and a checkpoint is saved at every step.
FRAGILE = {"heartbeat_seconds": "0.3", "heartbeat_timeout_seconds": "4", "reaper_interval_seconds": "0.5",
           "checkpoint_seconds": "0"}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceStack:
    def __init__(
        self,
        home: Path,
        database_url: str | None = None,
        broker_url: str | None = None,
        queue: str | None = None,
        worker_cgroup: Path | None = None,
        own_homes: bool = False,
        **settings: str,
    ):
        """`settings`: further DISTILL_* settings by lower-case name (heartbeat_seconds="0.5");
        `worker_cgroup`: a cgroup's folder the worker runs in, with the children it forks; `own_homes`:
        each process a DISTILL_HOME of its own (`home/<name>`), as on machines that share no disk."""
        self.home = home
        self.worker_cgroup = worker_cgroup
        self.own_homes = own_homes
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DISTILL_HOME": str(home), "PYTHONUNBUFFERED": "1",
                    "DISTILL_PROGRESS_INTERVAL_SECONDS": "0.2"}  # fmt: skip
        settings = {f"DISTILL_{name.upper()}": value for name, value in settings.items()} | {
            "DISTILL_DATABASE_URL": database_url,
            "DISTILL_BROKER_URL": broker_url,
            "DISTILL_TASK_QUEUE": queue,
        }
        for name, value in settings.items():
            if value:
                self.env[name] = value
        self.processes: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> "ServiceStack":
        self.home.mkdir(parents=True, exist_ok=True)
        self._cli("migrate").check_returncode()
        self._start("api", "api", "--port", str(self.port))
        self.start_worker("worker")
        self.client = ServiceClient(self.url, timeout=30, diagnostics=self.logs)
        self._wait_ready()
        return self

    def __exit__(self, *exc) -> None:
        """The API stops as it does in a deploy; the workers are killed with their children, as nothing is
        left to finish (a worker's warm shutdown after a job takes seconds: per module, they add up)."""
        self.client.close()
        for name in [name for name in self.processes if name != "api"]:
            self.kill(name)
        api = self.processes.pop("api", None)
        if api is None:  # a test killed it
            return
        api.terminate()
        try:
            api.wait(timeout=20)
        except subprocess.TimeoutExpired:
            api.kill()

    def _cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    def _start(self, name: str, *args: str) -> None:
        log = (self.home / f"{name}.log").open("w")
        env = self.env
        if self.own_homes:
            env = {**env, "DISTILL_HOME": str(self.home / name)}
            (self.home / name).mkdir(exist_ok=True)
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=self._join_cgroup if name == "worker" and self.worker_cgroup else None,
            start_new_session=True,  # a process group of its own, which `kill` ends whole
        )

    def start_worker(self, name: str) -> None:
        """A worker process (one job at once) by this name, beside any others."""
        self._start(name, "worker", "--concurrency", "1")

    def kill(self, name: str) -> None:
        """SIGKILL the process and every child it forked, as a machine that is gone would end them."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def _join_cgroup(self) -> None:
        (self.worker_cgroup / "cgroup.procs").write_text(str(os.getpid()))

    def restart_api(self) -> None:
        """Stop the API process and start a new one on the same port, as a deploy or a crash would."""
        api = self.processes.pop("api")
        api.terminate()
        api.wait(timeout=20)
        self._start("api", "api", "--port", str(self.port))
        self._wait_ready()

    @property
    def storage(self) -> Storage:
        """The storage the service keeps its objects in (DISTILL_STORAGE_URL, default under its home)."""
        return make_storage(self.env.get("DISTILL_STORAGE_URL", str(self.home / "storage")))

    def training_processes(self) -> list[int]:
        """The worker's child processes: the prefork pool, where jobs run."""
        result = subprocess.run(
            ["pgrep", "-P", str(self.processes["worker"].pid)], capture_output=True, text=True
        )
        return [int(pid) for pid in result.stdout.split()]

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}.log\n{(self.home / f'{name}.log').read_text()[-6000:]}" for name in self.processes
        )

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}\n{self.logs()}")
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the API did not become ready in {timeout}s\n{self.logs()}")
