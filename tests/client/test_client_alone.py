"""The client stands alone: it imports nothing of the service (nor torch, FastAPI, Celery), builds as a
wheel of its own that needs httpx only, retries what is worth retrying with one Idempotency-Key, and
reads server-sent events as the format defines them."""

import shutil
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from distill_client import APIError, Client, DistillError
from distill_client.sse import Message, messages
from tests.stack import ROOT, free_port


def test_importing_the_client_loads_no_torch_fastapi_or_celery():
    heavy = "{'torch', 'fastapi', 'celery', 'sqlalchemy'}"
    check = f"import sys, distill_client; print(sorted({heavy} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_the_client_builds_as_a_wheel_of_its_own_without_the_service_or_torch(tmp_path):
    source = shutil.copytree(
        ROOT / "distill_client", tmp_path / "source", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(  # from a copy: setuptools builds in the source folder
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("distill_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
        scripts = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert {n.split("/")[0] for n in names} == {"distill_client", "distill_client-0.1.0.dist-info"}
    assert "distill_client/client.py" in names
    requires = [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist")]
    assert requires == ["httpx>=0.27", "click>=8", "rich>=13", "PyYAML>=6"]
    assert "distill = distill_client.cli:run_cli" in scripts


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
