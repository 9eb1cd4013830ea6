"""`distill`: run the service, and use it.

Run it: `distill up` is the embedded single-machine default behind `make run` (migrate, then the API beside
one worker); `distill migrate`, `distill api` and `distill worker` are its parts, for a deployment.
`distill keys create|revoke|list` manage the API keys that `DISTILL_AUTH=on` requires. Each builds what it
runs from the settings it is given (default: the environment's, `DISTILL_*`).

Use it, from a terminal or CI: `distill run job.yaml` and `distill files|jobs|artifacts ...` are the
client's commands (all that `pip install ./distill_client` installs), configured by $DISTILL_URL and
$DISTILL_API_KEY (or --url, --api-key). Their exit codes: 0 succeeded (and its gates passed), 1 the job
failed, 2 bad usage, a refused request or no service at the URL, 3 cancelled, 4 a gate failed, 5 timed out
waiting."""

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

import click

from distill_client import cli as client

if TYPE_CHECKING:  # the server's modules load inside its commands: the client's start fast
    from sqlalchemy.orm import Session

    from core.config import Settings

_given_settings: ContextVar["Settings | None"] = ContextVar("given_settings", default=None)


def main(argv: list[str] | None = None, settings: "Settings | None" = None) -> None:
    """Run a command. `settings` (default: the environment's) lets a caller in-process, such as a test,
    point the server's commands at another database."""
    given = _given_settings.set(settings)
    try:
        client.run_cli(argv, commands=distill)
    finally:
        _given_settings.reset(given)


def with_settings(command: Callable[..., None]) -> Callable[..., None]:
    """`command(settings, **options)`, with the settings `main` was given, else the environment's; settings
    the service cannot use stop it with a message naming the variable."""

    @functools.wraps(command)
    def run(**options) -> None:
        from pydantic import ValidationError

        from core.config import get_settings, settings_problems

        given = _given_settings.get()
        try:
            settings = given if given is not None else get_settings()
        except ValidationError as error:
            sys.exit(f"distill: cannot start: {settings_problems(error)}")
        command(settings, **options)

    return run


# --- the service ------------------------------------------------------------------------------

bind_host = click.option(
    "--host", envvar="HOST", default="127.0.0.1", show_default=True, show_envvar=True, help="address to bind"
)
bind_port = click.option(
    "--port", envvar="PORT", type=int, default=8000, show_default=True, show_envvar=True, help="port to bind"
)
worker_loglevel = click.option("--loglevel", default="INFO", show_default=True, help="the worker's log level")


@click.command("migrate")
@with_settings
def migrate(settings: "Settings") -> None:
    """Apply the database migrations."""
    migrate_database(settings)


@click.command("api")
@bind_host
@bind_port
@click.option("--loglevel", hidden=True, expose_value=False)  # accepted, as ever; uvicorn logs at its level
@with_settings
def api(settings: "Settings", host: str, port: int) -> None:
    """Serve the HTTP API."""
    serve_api(settings, host=host, port=port)


@click.command("worker")
@click.option("--concurrency", type=int, default=1, show_default=True, help="jobs at once (one per GPU)")
@worker_loglevel
@with_settings
def worker(settings: "Settings", concurrency: int, loglevel: str) -> None:
    """Run a training worker."""
    from core.resources import Resources
    from worker.celery_app import make_celery

    resources = Resources.from_settings(settings)
    _refuse_unusable_storage(resources)
    app = make_celery(resources)
    app.worker_main(
        [
            "worker",
            f"--queues={settings.task_queue}",
            f"--concurrency={concurrency}",
            f"--loglevel={loglevel}",
            f"--hostname=distill-{os.getpid()}@%h",
        ]
    )


@click.command("up")
@bind_host
@bind_port
@worker_loglevel
@with_settings
def up(settings: "Settings", host: str, port: int, loglevel: str) -> None:
    """Migrate, then serve the API beside one worker; stop both together."""
    migrate_database(settings)
    command = [sys.executable, "-m", "cli", "worker", "--concurrency", "1", "--loglevel", loglevel]
    worker_process = subprocess.Popen(command)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        print(f"distill: serving on http://{host}:{port} (worker pid {worker_process.pid})", flush=True)
        serve_api(settings, host=host, port=port)
    finally:
        worker_process.terminate()
        try:
            worker_process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker_process.kill()


def migrate_database(settings: "Settings") -> None:
    from core.migrate import upgrade

    url = settings.resolved_database_url
    upgrade(url)
    print(f"database ready: {_redacted(url)}")


def serve_api(settings: "Settings", *, host: str, port: int) -> None:
    import uvicorn

    from service.main import create_app

    _refuse_open_bind_without_auth(host, settings)
    app = create_app(settings)
    _refuse_unusable_storage(app.state.resources)
    uvicorn.run(app, host=host, port=port, proxy_headers=True)


def _refuse_unusable_storage(resources) -> None:
    problem = resources.storage.problem()
    if problem is not None:
        url = resources.settings.resolved_storage_url
        sys.exit(f"distill: cannot use the storage {url} (DISTILL_STORAGE_URL): {problem}.")


def _refuse_open_bind_without_auth(host: str, settings: "Settings") -> None:
    if settings.auth == "on" or settings.allow_unauthenticated_bind:
        return
    from core.hosts import is_loopback

    if not is_loopback(host):
        sys.exit(
            f"distill: refusing to listen on {host} with DISTILL_AUTH=off; bind 127.0.0.1 or turn auth on."
        )


# --- API keys ---------------------------------------------------------------------------------


@click.group("keys")
def keys() -> None:
    """Manage API keys (for DISTILL_AUTH=on)."""


@keys.command("create")
@click.option("--tenant", required=True, help="the tenant whose files and jobs the key reaches")
@with_settings
def create_key(settings: "Settings", tenant: str) -> None:
    """Print a new API key for a tenant (shown once)."""
    from service import auth

    try:
        auth.check_tenant_name(tenant)
    except ValueError as exc:
        sys.exit(f"distill: {exc}")
    with _key_store(settings) as session:
        new = auth.create_key(session, tenant)
    # The key alone on stdout (`KEY=$(distill keys create --tenant acme)`); the words on stderr.
    print(new.key, flush=True)
    print(
        f"API key {new.id} for tenant {new.tenant_id!r}. It is shown only this once (the server keeps a "
        f"hash of it): store it now. Revoke it with `distill keys revoke {new.id}`.",
        file=sys.stderr,
    )


@keys.command("revoke")
@click.argument("key_id", metavar="KEY_ID")
@with_settings
def revoke_key(settings: "Settings", key_id: str) -> None:
    """Revoke an API key, given its id (key-…) or the whole key: requests with it get 401."""
    from service import auth

    key_id = auth.key_id_of(key_id)
    with _key_store(settings) as session:
        row, newly = auth.revoke_key(session, key_id)
    if row is None:
        sys.exit(f"distill: no API key with id {key_id!r} (`distill keys list` shows them).")
    state = "revoked: requests with it now get 401" if newly else "was already revoked"
    print(f"API key {row.id} of tenant {row.tenant_id!r} {state}.")


@keys.command("list")
@click.option("--tenant", help="only this tenant's keys")
@with_settings
def list_keys(settings: "Settings", tenant: str | None) -> None:
    """List the API keys (ids and tenants, never the keys)."""
    from sqlalchemy import select

    from core.models import ApiKey

    query = select(ApiKey).order_by(ApiKey.pk)
    if tenant:
        query = query.where(ApiKey.tenant_id == tenant)
    with _key_store(settings) as session:
        rows = list(session.scalars(query))
    print(f"{'KEY ID':<30} {'TENANT':<24} {'CREATED':<20} {'LAST USED':<20} REVOKED")
    for row in rows:
        print(
            f"{row.id:<30} {row.tenant_id:<24} {_when(row.created_at):<20} {_when(row.last_used_at):<20} "
            f"{_when(row.revoked_at)}"
        )


@contextmanager
def _key_store(settings: "Settings") -> Iterator["Session"]:
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


def _when(timestamp: int | None) -> str:
    return "-" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp))


def _redacted(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


# The client's commands and options, and the service's, in one group.
distill = click.Group(
    "distill",
    help=__doc__,
    params=client.main.params,
    callback=client.main.callback,
    commands=[*client.main.commands.values(), up, api, worker, migrate, keys],
)


if __name__ == "__main__":
    main()
