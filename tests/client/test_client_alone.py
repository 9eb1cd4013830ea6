"""The client stands alone: it imports nothing of the service (nor torch, FastAPI, Celery), builds as a
wheel of its own that needs httpx only, retries what is worth retrying with one Idempotency-Key, and
reads server-sent events as the format defines them."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from distill_client import APIError, Client, DistillError
from distill_client.sse import Message, messages
from tests.client.commands import CLIENT_COMMANDS, EmptyService, listed_commands
from tests.stack import ROOT, free_port


def test_importing_the_client_loads_no_torch_fastapi_or_celery():
    heavy = "{'torch', 'fastapi', 'celery', 'sqlalchemy'}"
    check = f"import sys, distill_client; print(sorted({heavy} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The client's wheel, built from this checkout."""
    folder = tmp_path_factory.mktemp("wheel")
    source = shutil.copytree(
        ROOT / "distill_client", folder / "source", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(  # from a copy: setuptools builds in the source folder
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(folder), str(source)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (built,) = folder.glob("distill_client-*.whl")
    return built


def test_the_client_builds_as_a_wheel_of_its_own_without_the_service_or_torch(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
        scripts = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert {n.split("/")[0] for n in names} == {"distill_client", "distill_client-0.1.0.dist-info"}
    assert "distill_client/client.py" in names
    requires = [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist")]
    assert requires == ["httpx>=0.27", "click>=8", "rich>=13", "PyYAML>=6"]
    assert "distill = distill_client.cli:run_cli" in scripts


SERVICE_PACKAGES = ["cli", "core", "service", "worker", "engine"]


def test_the_clients_own_distill_lists_and_runs_its_commands_without_the_service(wheel, tmp_path):
    """The wheel installed alone: its `distill` (the entry point it names) under `python -S`, which leaves
    out the .pth files, so the service's packages (installed editable through one) are not there."""
    site = tmp_path / "site"
    install = ["install", "--quiet", "--no-deps", "--no-index", "--target", str(site), str(wheel)]
    subprocess.run([sys.executable, "-m", "pip", *install], check=True, capture_output=True, timeout=120)
    dependencies = sysconfig.get_path("purelib")  # httpx, click, rich, PyYAML
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join([str(site), dependencies])}

    def python(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-S", *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )

    found = f"[name for name in {SERVICE_PACKAGES} if importlib.util.find_spec(name)]"
    where = f"import importlib.util; print({found}, importlib.util.find_spec('distill_client').origin)"
    assert python("-c", where).stdout.split() == ["[]", str(site / "distill_client" / "__init__.py")]

    distill = str(site / "bin" / "distill")
    shown = python(distill, "--help")
    assert shown.returncode == 0, shown.stderr
    assert listed_commands(shown.stdout) == CLIENT_COMMANDS
    with EmptyService() as service:
        listed = python(distill, "--url", service.url, "--api-key", "dk_test", "--json", "files", "list")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    assert service.requests == [("/v1/files?limit=100", "Bearer dk_test")]


class FlakyServer(ThreadingHTTPServer):
    """Answers each POST with the next of `answers` (status, headers), then 201; records the requests."""

    def __init__(self, answers):
        self.answers, self.seen = list(answers), []
        super().__init__(("127.0.0.1", free_port()), FlakyHandler)


class FlakyHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.seen.append(self.headers.get("Idempotency-Key"))
        status, headers = self.server.answers.pop(0) if self.server.answers else (201, {})
        body = b'{"error": {"code": "busy", "message": "try later", "param": null}}' if status >= 400 else JOB
        self.send_response(status)
        for name, value in {
            **headers,
            "Content-Type": "application/json",
            "Content-Length": len(body),
        }.items():
            self.send_header(name, str(value))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


JOB = b'{"id": "job-1", "status": "queued", "request": {}, "progress": {}, "artifacts": []}'


@pytest.fixture
def flaky(request):
    server = FlakyServer(request.param)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.mark.parametrize("flaky", [[(503, {"Retry-After": "0"}), (429, {}), (502, {})]], indirect=True)
def test_busy_answers_are_retried_with_the_same_idempotency_key(flaky):
    with Client(f"http://127.0.0.1:{flaky.server_port}", retries=3, backoff_seconds=0.01) as client:
        assert client.create_job({}).id == "job-1"
    assert len(flaky.seen) == 4 and len(set(flaky.seen)) == 1 and flaky.seen[0]


@pytest.mark.parametrize("flaky", [[(503, {})] * 3], indirect=True)
def test_the_last_busy_answer_is_raised(flaky):
    with Client(f"http://127.0.0.1:{flaky.server_port}", retries=2, backoff_seconds=0.01) as client:
        with pytest.raises(APIError) as busy:
            client.create_job({})
    assert (busy.value.status, busy.value.code, busy.value.message) == (503, "busy", "try later")
    assert len(flaky.seen) == 3


@pytest.mark.parametrize("flaky", [[(422, {})]], indirect=True)
def test_a_refusal_is_not_retried(flaky):
    with Client(f"http://127.0.0.1:{flaky.server_port}", retries=3, backoff_seconds=0.01) as client:
        with pytest.raises(APIError):
            client.create_job({})
    assert len(flaky.seen) == 1


def test_a_server_that_is_not_there_is_named_after_the_retries():
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, retries=2, backoff_seconds=0.01) as client:
        with pytest.raises(DistillError, match=f"cannot reach {url}: ConnectError"):
            client.get_job("job-1")


def test_server_sent_events_are_read_as_the_format_defines_them():
    lines = [": keep-alive", "", "id: evt-1", "event: job.event", 'data: {"a": 1}', "",
             "data: one", "data: two", "", "event: end", "data: {}", ""]  # fmt: skip
    assert list(messages(lines)) == [
        Message("job.event", '{"a": 1}', "evt-1"),
        Message("message", "one\ntwo", "evt-1"),
        Message("end", "{}", "evt-1"),
    ]
