"""`distill`: run the service. `distill up` is the embedded single-machine default behind `make run`."""

import argparse
import ipaddress
import os
import signal
import subprocess
import sys

from service.config import get_settings


def migrate(_args) -> None:
    from service.migrate import upgrade

    upgrade()
    print(f"database ready: {_redacted(get_settings().resolved_database_url)}")


def api(args) -> None:
    import uvicorn

    _refuse_open_bind_without_auth(args.host)
    uvicorn.run("service.main:app", host=args.host, port=args.port, proxy_headers=True)


def worker(args) -> None:
    from worker.celery_app import app

    settings = get_settings()
    app.worker_main(["worker", "--queues", settings.task_queue, "--concurrency", str(args.concurrency),
                     "--loglevel", args.loglevel, "--hostname", f"distill-{os.getpid()}@%h"])  # fmt: skip


def up(args) -> None:
    """Migrate, start one worker process beside the API, and stop both together."""
    migrate(args)
    command = [
        sys.executable,
        "-m",
        "service.cli",
        "worker",
        "--concurrency",
        "1",
        "--loglevel",
        args.loglevel,
    ]
    worker_process = subprocess.Popen(command)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        print(
            f"distill: serving on http://{args.host}:{args.port} (worker pid {worker_process.pid})",
            flush=True,
        )
        api(args)
    finally:
        worker_process.terminate()
        try:
            worker_process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker_process.kill()


def _refuse_open_bind_without_auth(host: str) -> None:
    settings = get_settings()
    if settings.auth == "on" or settings.allow_unauthenticated_bind:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        sys.exit(
            f"distill: refusing to listen on {host} with DISTILL_AUTH=off; bind 127.0.0.1 or turn auth on."
        )


def _redacted(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="distill", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("migrate", help="apply the database migrations").set_defaults(run=migrate)
    for name, run, help_ in (
        ("api", api, "serve the HTTP API"),
        ("up", up, "migrate, then serve API + worker"),
    ):
        command = commands.add_parser(name, help=help_)
        command.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        command.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        command.add_argument("--loglevel", default="INFO")
        command.set_defaults(run=run)
    command = commands.add_parser("worker", help="run a training worker")
    command.add_argument("--concurrency", type=int, default=1, help="jobs at once (one per GPU)")
    command.add_argument("--loglevel", default="INFO")
    command.set_defaults(run=worker)

    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
