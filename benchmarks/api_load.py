"""The API under load: requests per second and latency of the status and list reads with 10,000 stored
jobs, on SQLite (the embedded default) and on PostgreSQL, against their goals (`benchmarks/api_goals.py`).

The benchmark starts uvicorn itself (as `distill api` does: same app, same settings) on each backend,
after inserting the jobs straight into the database (`benchmarks/stored_jobs.py`). Into that server's
app, and nowhere else, it adds two routes answering what the API answered for `name`, behind the same
middleware: `GET /plain/{name}`, a plain FastAPI route returning the body as a dict (the yardstick of the
goals), and `GET /bare/{name}`, the bytes themselves (what any route costs at least). `wrk` measures
each at 1 and 64 connections, one right after the other, and each backend's in turn (both servers run
throughout); a table of both backends side by side ends.

    .venv/bin/python -m benchmarks.api_load [--seconds 5] [--jobs 10000] [--backends embedded postgres]
        [--endpoints job jobs-20 jobs-100 files-100]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import httpx
import uvicorn
from fastapi import APIRouter, Response

from benchmarks.api_goals import AT, BACKENDS, GOAL, READS, figures
from benchmarks.common import ROOT, argument_parser, machine, write_result
from benchmarks.stored_jobs import insert_jobs
from core.db import Database
from core.migrate import upgrade
from service.main import create_app
from tests.servers import postgres_database
from tests.stack import free_port

CONNECTIONS = (1, int(AT))
YARDSTICKS = ("plain", "bare")
# wrk's summary as one JSON line (its own report is for people); latencies in microseconds.
WRK_REPORT = """
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "microseconds": %d, "non_2xx": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, errors.status, errors.connect + errors.read + errors.write
    + errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


# --- the server: the API's app plus the bare route, in one process ------------------------------


def yardsticks(bodies: Path) -> APIRouter:
    """`GET /plain/{name}`: the body in `bodies/name.json` as a dict, read once, which FastAPI encodes at
    each request; `GET /bare/{name}`: its bytes. Nothing else."""
    router = APIRouter()
    encoded = cache(lambda name: (bodies / f"{name}.json").read_bytes())
    decoded = cache(lambda name: json.loads(encoded(name)))

    @router.get("/plain/{name}")
    async def plain(name: str) -> dict:
        return decoded(name)

    @router.get("/bare/{name}")
    async def bare(name: str) -> Response:
        return Response(encoded(name), media_type="application/json")

    return router


def serve(port: int, bodies: Path) -> None:
    """What `distill api` runs (settings from the environment), with the yardsticks added."""
    app = create_app()
    app.include_router(yardsticks(bodies))
    uvicorn.run(app, host="127.0.0.1", port=port, proxy_headers=True)


@contextmanager
def api_server(home: Path, database_url: str | None) -> Iterator[httpx.Client]:
    """The server above in a process of its own, on a free port; a client of it once it is ready."""
    port, env = free_port(), {**os.environ, "DISTILL_HOME": str(home)}
    env.pop("DISTILL_AUTH", None)
    if database_url:
        env["DISTILL_DATABASE_URL"] = database_url
    command = [sys.executable, "-m", "benchmarks.api_load", "--serve", str(port), "--bodies", str(home)]
    with (home / "api.log").open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        _wait_ready(client, process)
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=20)


def _wait_ready(client: httpx.Client, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"the API did not become ready (exit code {process.poll()})")


# --- measuring --------------------------------------------------------------------------------


def endpoints(client: httpx.Client) -> dict[str, str]:
    """The reads measured, by name: a succeeded job (metrics, artifacts, gates), the jobs list at 20 and
    100 a page, the files list."""
    newest = client.get("/v1/jobs", params={"status": "succeeded", "limit": 1}).json()["data"]
    return {name: path.replace("{id}", newest[0]["id"]) for name, path in READS.items()}


def copy_bodies(client: httpx.Client, paths: dict[str, str], bodies: Path) -> None:
    """What the API answers on each path, for the yardsticks to answer the same."""
    for name, path in paths.items():
        response = client.get(path)
        response.raise_for_status()
        (bodies / f"{name}.json").write_bytes(response.content)
        bare, plain = client.get(f"/bare/{name}"), client.get(f"/plain/{name}")
        assert bare.content == response.content and bare.headers["content-type"] == "application/json"
        assert plain.json() == response.json() and plain.headers["content-type"] == "application/json"


def wrk(client: httpx.Client, path: str, connections: int, seconds: int, script: Path) -> dict:
    """req/s, p50 and p99 of `wrk` on one path of the client's server; every answer must be a 2xx."""
    url = str(client.base_url).rstrip("/") + path
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "60s", "-s", str(script), url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    _settle(client)
    report = json.loads(output.strip().splitlines()[-1])
    if report["non_2xx"] or report["socket_errors"]:
        errors = f"{report['non_2xx']} non-2xx answers, {report['socket_errors']} socket errors"
        raise RuntimeError(f"wrk {path}: {errors}")
    answered = report["requests"] > 0  # else wrk's percentiles are 0: none came back in time
    return {
        "requests_per_second": round(report["requests"] / (report["microseconds"] / 1e6), 1),
        "p50_ms": round(report["p50_us"] / 1000, 2) if answered else None,
        "p99_ms": round(report["p99_us"] / 1000, 2) if answered else None,
    }


def _settle(client: httpx.Client) -> None:
    """Wait until the server has answered what wrk left queued when it stopped, so that the next run
    does not pay for this one: until /healthz answers in under 10 ms three times running."""
    quick = 0
    while quick < 3:
        started = time.perf_counter()
        client.get("/healthz")
        quick = quick + 1 if time.perf_counter() - started < 0.01 else 0


@dataclass(frozen=True)
class Server:
    """An API server of the benchmark on one backend, and the reads measured on it."""

    name: str  # the backend's, for people
    client: httpx.Client
    paths: dict[str, str]  # by name
    sizes: dict[str, int]  # of each path's body, by name
    script: Path  # wrk's report


def measure(servers: dict[str, Server], seconds: int) -> dict:
    """Each endpoint and its yardsticks at each of CONNECTIONS, on each backend's server in turn, one
    right after the other, so that a change of the machine's load falls on all of them alike."""
    result = {backend: {} for backend in servers}
    for name in READS:
        on = {backend: server for backend, server in servers.items() if name in server.paths}
        for server in on.values():
            wrk(server.client, server.paths[name], 8, 1, server.script)  # warm-up
        for connections in CONNECTIONS:
            for backend, server in on.items():
                runs = measure_one(server, name, connections, seconds)
                result[backend].setdefault(name, {})[str(connections)] = runs
    return result


def measure_one(server: Server, name: str, connections: int, seconds: int) -> dict:
    """A read and its yardsticks, with the read's ratios to them."""
    path, client, script = server.paths[name], server.client, server.script
    runs = {"api": wrk(client, path, connections, seconds, script)}
    for yardstick in YARDSTICKS:
        runs[yardstick] = wrk(client, f"/{yardstick}/{name}", connections, seconds, script)
    rate = runs["api"]["requests_per_second"]
    over_plain = round(rate / runs["plain"]["requests_per_second"], 2)
    ratio = round(rate / runs["bare"]["requests_per_second"], 2)
    print(
        f"  {server.name:<10} {path[:32]:<32} {connections:>2} conn: {_figures(runs['api'])} | plain "
        f"{_figures(runs['plain'])} | bare {_figures(runs['bare'])} | / plain {over_plain:.2f}",
        flush=True,
    )
    return runs | {"over_plain": over_plain, "ratio": ratio}


def _figures(run: dict) -> str:
    if run["p50_ms"] is None:
        return f"{0:>7} req/s: no answer within the run"
    rate, p50, p99 = run["requests_per_second"], run["p50_ms"], run["p99_ms"]
    return f"{rate:>7.0f} req/s p50 {p50:>6.2f} ms p99 {p99:>6.2f} ms"


@contextmanager
def stored_jobs_server(backend: str, jobs: int, names: list[str]) -> Iterator[Server]:
    """The API server on a fresh database of `backend` holding `jobs` jobs, the reads `names` on it."""
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        home = Path(folder)
        database_url = stack.enter_context(postgres_database()) if backend == "postgres" else None
        url_of_database = database_url or f"sqlite:///{home / 'distill.db'}"
        upgrade(url_of_database)
        started = time.perf_counter()
        insert_jobs(Database(url_of_database), jobs)
        print(f"{backend}: {jobs} jobs inserted in {time.perf_counter() - started:.1f} s", flush=True)
        client = stack.enter_context(api_server(home, database_url))
        paths = {name: path for name, path in endpoints(client).items() if name in names}
        copy_bodies(client, paths, home)
        sizes = {name: (home / f"{name}.json").stat().st_size for name in paths}
        script = home / "report.lua"
        script.write_text(WRK_REPORT)
        yield Server(BACKENDS[backend], client, paths, sizes, script)


def side_by_side(result: dict) -> None:
    """The goals' figures at AT connections, a column per backend."""
    columns = [*BACKENDS, "postgres / embedded"]
    cells = {(figure.read, figure.measure, figure.backend): figure for figure in figures(result)}
    rows = dict.fromkeys((read, measure) for read, measure, _ in cells)
    print(f"\nAt {AT} connections{'':<33}" + "".join(f"{BACKENDS.get(c, c):>22}" for c in columns))
    for read, measure in rows:
        line = f"  GET {READS[read]:<20} {measure:<15} {_goal(cells, read, measure):<9}"
        print(line + "".join(f"{_cell(cells.get((read, measure, column))):>22}" for column in columns))


def _goal(cells: dict, read: str, measure: str) -> str:
    return next(figure.goal_text for (r, m, _), figure in cells.items() if (r, m) == (read, measure))


def _cell(figure) -> str:
    return "" if figure is None else f"{figure.measured:g}x {'met' if figure.met else 'MISSED'}"


def main() -> None:
    parser = argument_parser(__doc__, "api_load")
    parser.add_argument("--seconds", type=int, default=5, help="each wrk run's length")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=list(BACKENDS))
    parser.add_argument("--endpoints", nargs="+", choices=list(READS), default=list(READS))
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bodies", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.bodies)
    if args.url:
        parser.error("--url: the yardsticks must live in the API's own process; this benchmark starts it")
    result = {"benchmark": "api_load", "machine": machine(), "jobs": args.jobs, "seconds": args.seconds}
    result["goal"] = GOAL
    with ExitStack() as stack:
        servers = {
            backend: stack.enter_context(stored_jobs_server(backend, args.jobs, args.endpoints))
            for backend in args.backends
        }
        for backend, reads in measure(servers, args.seconds).items():
            result[backend] = {"paths": servers[backend].paths, "bytes": servers[backend].sizes, **reads}
    side_by_side(result)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
