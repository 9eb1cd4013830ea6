"""What the tests of a `distill` command share: running it, the commands its help lists, and a stand-in
service."""

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.stack import ROOT

CLIENT_COMMANDS = {"run", "files", "jobs", "artifacts"}


def run_distill(*argv: str, **env: str) -> subprocess.CompletedProcess:
    """`distill` as the entry point runs it, from this checkout."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    command = [sys.executable, "-m", "cli", *argv]
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)


def listed_commands(help_text: str) -> set[str]:
    """The commands a click help page lists."""
    return {line.split()[0] for line in help_text.split("\nCommands:\n")[1].splitlines() if line.strip()}


class EmptyService(ThreadingHTTPServer):
    """Answers every GET with an empty page, as the service does with nothing to list; keeps each request's
    path and Authorization header in `requests`."""

    def __init__(self):
        self.requests: list[tuple[str, str | None]] = []
        super().__init__(("127.0.0.1", 0), EmptyPage)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def __enter__(self) -> "EmptyService":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class EmptyPage(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("Authorization")))
        body = b'{"data": [], "has_more": false}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass
