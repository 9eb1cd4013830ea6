"""Settings the service cannot serve stop `distill` at start-up with a message naming the variable, before
anything is created."""

import os
import subprocess
import sys

import pytest

from tests.stack import ROOT


def distill(cwd, *argv: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DISTILL_HOME": str(cwd / "home"), "PYTHONPATH": str(ROOT), **env}
    command = [sys.executable, "-m", "cli", *argv]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [["api"], ["worker"], ["migrate"]])
def test_a_storage_url_it_cannot_serve_is_refused(tmp_path, command):
    result = distill(tmp_path, *command, DISTILL_STORAGE_URL="gs://bucket/prefix")
    assert result.returncode != 0
    assert "DISTILL_STORAGE_URL" in result.stderr and "gs://bucket/prefix" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no `gs:` folder, no home


@pytest.mark.s3
@pytest.mark.parametrize("command", [["api"], ["worker"]])
def test_a_bucket_that_is_missing_is_named_at_start_up(tmp_path, command, s3_endpoint):
    distill(tmp_path, "migrate").check_returncode()
    result = distill(tmp_path, *command, DISTILL_STORAGE_URL="s3://no-such-bucket-here/distill")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "'no-such-bucket-here'" in result.stderr and "AWS_ENDPOINT_URL" in result.stderr


def test_a_setting_out_of_range_is_named(tmp_path):
    result = distill(tmp_path, "migrate", DISTILL_AUTH="maybe")
    assert result.returncode != 0 and "DISTILL_AUTH" in result.stderr and "Traceback" not in result.stderr
