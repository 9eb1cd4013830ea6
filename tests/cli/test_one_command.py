"""One `distill`: the service's commands and the client's in one group, each with its help; the client's
options work as they do alone, and neither `--help` nor a client command loads the service."""

import json
import subprocess
import sys
from collections.abc import Iterator

import click
import pytest

from cli.main import distill, main
from tests.client.commands import CLIENT_COMMANDS, EmptyService, listed_commands, run_distill
from tests.stack import ROOT

SERVICE_COMMANDS = {"up", "api", "worker", "migrate", "keys"}
SERVICE_MODULES = [
    "sqlalchemy",
    "uvicorn",
    "celery",
    "pydantic",
    "core",
    "service",
    "worker",
    "engine",
    "torch",
]


def test_the_help_lists_every_command_of_the_service_and_the_client():
    result = run_distill("--help")
    assert result.returncode == 0, result.stderr
    assert listed_commands(result.stdout) == SERVICE_COMMANDS | CLIENT_COMMANDS
    assert "--url" in result.stdout and "--api-key" in result.stdout and "--json" in result.stdout


def command_paths(group: click.Group, *above: str) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*above, name)
        if isinstance(command, click.Group):
            yield from command_paths(command, *above, name)


@pytest.mark.parametrize("path", list(command_paths(distill)), ids=" ".join)
def test_each_command_has_its_help(capsys, path):
    main([*path, "--help"])
    usage, description = capsys.readouterr().out.split("\n\n")[:2]
    assert usage.startswith(f"Usage: distill {' '.join(path)} [OPTIONS]")
    assert description.strip()


@pytest.mark.parametrize("given_by", ["options", "environment"])
def test_the_client_commands_take_the_url_and_key_as_before(given_by):
    with EmptyService() as service:
        options = ["--url", service.url, "--api-key", "dk_test"] if given_by == "options" else []
        env = {"DISTILL_URL": service.url, "DISTILL_API_KEY": "dk_test"} if given_by == "environment" else {}
        result = run_distill(*options, "--json", "jobs", "list", "--status", "queued", **env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert service.requests == [("/v1/jobs?status=queued&limit=100", "Bearer dk_test")]


LOADED_AFTER = f"""
import sys
from cli.main import main
try:
    main(sys.argv[1:])
finally:
    print(sorted(set({SERVICE_MODULES}) & set(sys.modules)), file=sys.stderr)
"""


@pytest.mark.parametrize("command", [["--help"], ["jobs", "list"]], ids=" ".join)
def test_the_help_and_the_client_commands_load_nothing_of_the_service(command):
    with EmptyService() as service:
        argv = [sys.executable, "-c", LOADED_AFTER, "--url", service.url, *command]
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "[]"
