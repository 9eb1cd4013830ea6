"""docker-compose.yml is a valid Compose file with the scaled-out stack in it."""

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def compose_command() -> list[str]:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("no Docker Compose client on this machine (docker compose / docker-compose)")


def test_compose_file_is_accepted_and_has_the_stack():
    result = subprocess.run(
        [*compose_command(), "config", "--services"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) >= {"api", "worker", "postgres", "redis", "minio", "bucket", "migrate"}


def test_the_distill_services_share_no_disk_and_keep_everything_in_the_bucket():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    bucket = services["bucket"]["command"][-1].removeprefix("minio/")
    for name in ("migrate", "api", "worker"):
        service = services[name]
        assert not service.get("volumes"), f"{name} mounts a volume"
        assert service["environment"]["DISTILL_STORAGE_URL"].startswith(f"s3://{bucket}/")
        assert service["environment"]["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert services["migrate"]["depends_on"]["bucket"] == {"condition": "service_completed_successfully"}


def test_the_image_holds_every_package_the_project_installs():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = {
        line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY")
    }
    assert {pattern.removesuffix("*") for pattern in packages["include"]} <= copied
