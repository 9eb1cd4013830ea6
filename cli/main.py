"""`distill`: run the service. `distill up` is the embedded single-machine default behind `make run`.
`distill keys create|revoke|list` manage the API keys that `DISTILL_AUTH=on` requires.
`distill files|jobs|artifacts|run ...` use a service as its users do, from a terminal or CI: the client's
CLI (`distill jobs --help`).

Each command builds what it runs from the settings it is given (default: the environment's)."""

import argparse
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import ValidationError
from sqlalchemy.orm import Session

from core.config import Settings, get_settings, settings_problems


def migrate(args) -> None:
    from core.migrate import upgrade

    url = args.settings.resolved_database_url
    upgrade(url)
    print(f"database ready: {_redacted(url)}")


def api(args) -> None:
    import uvicorn

    from service.main import create_app

    _refuse_open_bind_without_auth(args.host, args.settings)
    app = create_app(args.settings)
    _refuse_unusable_storage(app.state.resources)
    uvicorn.run(app, host=args.host, port=args.port, proxy_headers=True)


def worker(args) -> None:
    from core.resources import Resources
    from worker.celery_app import make_celery

    settings = args.settings
    resources = Resources.from_settings(settings)
    _refuse_unusable_storage(resources)
    app = make_celery(resources)
    app.worker_main(["worker", "--queues", settings.task_queue, "--concurrency", str(args.concurrency),
                     "--loglevel", args.loglevel, "--hostname", f"distill-{os.getpid()}@%h"])  # fmt: skip


def up(args) -> None:
    """Migrate, start one worker process beside the API, and stop both together."""
    migrate(args)
    command = [
        sys.executable,
        "-m",
        "cli",
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


def _refuse_unusable_storage(resources) -> None:
    problem = resources.storage.problem()
    if problem is not None:
        url = resources.settings.resolved_storage_url
        sys.exit(f"distill: cannot use the storage {url} (DISTILL_STORAGE_URL): {problem}.")


def _refuse_open_bind_without_auth(host: str, settings: Settings) -> None:
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


@contextmanager
def _key_store(settings: Settings) -> Iterator[Session]:
    """A session on the settings' database that commits at the end; a database that was never migrated
    is a clear exit, not a traceback."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from core.db import Database

    try:
        with Database(settings.resolved_database_url).transaction() as session:
            yield session
    except (OperationalError, ProgrammingError) as exc:
        sys.exit(
            f"distill: cannot use the API keys table in {_redacted(settings.resolved_database_url)} "
            f"({type(exc.orig).__name__}): run `distill migrate` first."
        )


def keys_create(args) -> None:
    from service import auth

    try:
        auth.check_tenant_name(args.tenant)
    except ValueError as exc:
        sys.exit(f"distill: {exc}")
    with _key_store(args.settings) as session:
        new = auth.create_key(session, args.tenant)
    # The key alone on stdout (`KEY=$(distill keys create --tenant acme)`); the words on stderr.
    print(new.key, flush=True)
    print(
        f"API key {new.id} for tenant {new.tenant_id!r}. It is shown only this once (the server keeps a "
        f"hash of it): store it now. Revoke it with `distill keys revoke {new.id}`.",
        file=sys.stderr,
    )


def keys_revoke(args) -> None:
    from service import auth

    key_id = auth.key_id_of(args.key_id)
    with _key_store(args.settings) as session:
        row, newly = auth.revoke_key(session, key_id)
    if row is None:
        sys.exit(f"distill: no API key with id {key_id!r} (`distill keys list` shows them).")
    state = "revoked: requests with it now get 401" if newly else "was already revoked"
    print(f"API key {row.id} of tenant {row.tenant_id!r} {state}.")


def keys_list(args) -> None:
    from sqlalchemy import select

    from core.models import ApiKey

    query = select(ApiKey).order_by(ApiKey.pk)
    if args.tenant:
        query = query.where(ApiKey.tenant_id == args.tenant)
    with _key_store(args.settings) as session:
        rows = list(session.scalars(query))
    print(f"{'KEY ID':<30} {'TENANT':<24} {'CREATED':<20} {'LAST USED':<20} REVOKED")
    for row in rows:
        print(
            f"{row.id:<30} {row.tenant_id:<24} {_when(row.created_at):<20} {_when(row.last_used_at):<20} "
            f"{_when(row.revoked_at)}"
        )


def _when(timestamp: int | None) -> str:
    return "-" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp))


def _redacted(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


CLIENT_COMMANDS = ("files", "jobs", "artifacts", "run", "--url", "--api-key", "--json")


def main(argv: list[str] | None = None, settings: Settings | None = None) -> None:
    """Run a command. `settings` (default: the environment's) lets a caller in-process, such as a test,
    point the commands at another database."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in CLIENT_COMMANDS:
        from distill_client.cli import run_cli

        run_cli(argv)
    parser = argparse.ArgumentParser(
        prog="distill", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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

    keys = commands.add_parser("keys", help="manage API keys (for DISTILL_AUTH=on)")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    command = key_commands.add_parser("create", help="print a new API key for a tenant (shown once)")
    command.add_argument("--tenant", required=True, help="the tenant whose files and jobs the key reaches")
    command.set_defaults(run=keys_create)
    command = key_commands.add_parser("revoke", help="revoke an API key: requests with it get 401")
    command.add_argument("key_id", metavar="KEY_ID", help="the key's id (key-…), or the whole key")
    command.set_defaults(run=keys_revoke)
    command = key_commands.add_parser("list", help="list the API keys (ids and tenants, never the keys)")
    command.add_argument("--tenant", help="only this tenant's keys")
    command.set_defaults(run=keys_list)

    args = parser.parse_args(argv)
    try:
        args.settings = settings if settings is not None else get_settings()
    except ValidationError as error:
        sys.exit(f"distill: cannot start: {settings_problems(error)}")
    args.run(args)


if __name__ == "__main__":
    main()
