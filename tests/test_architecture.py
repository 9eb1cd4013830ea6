"""The import contracts of pyproject.toml (`lint-imports`): the layers run one way (the CLI, then the API
and the workers apart, then the core, then the engine), the engine is plain PyTorch, the API never loads
torch, the client stands alone, and no package's modules import each other in a circle. Also: the
contracts do catch a break."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("distill_client", "cli", "service", "worker", "core", "engine")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_contracts_hold():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(contracts)} kept, 0 broken." in result.stdout


@pytest.fixture
def copy_of_the_packages(tmp_path) -> Path:
    """The packages and their contracts, copied where a test may break them."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("module", "back_import", "contract"),
    [
        ("engine/plan/errors.py", "import core.models", "Layers run one way"),
        ("core/storage.py", "import service.main", "Layers run one way"),
        ("service/deps.py", "import worker.tasks", "Layers run one way"),
        ("engine/models/hooks.py", "import sqlalchemy", "The engine imports no web framework"),
        ("core/errors.py", "import torch", "never load torch"),
        ("engine/models/registry.py", "import engine.pipeline", "No import circle inside a package"),
        ("distill_client/objects.py", "import core.models", "The client stands alone"),
        ("worker/ranks/rank.py", "import worker.tasks", "The ranks never import the task"),
    ],
    ids=[
        "engine->core",
        "core->service",
        "service->worker",
        "engine->sqlalchemy",
        "core->torch",
        "circle",
        "client->core",
        "rank->task",
    ],  # fmt: skip
)
def test_a_back_running_import_breaks_a_contract(copy_of_the_packages, module, back_import, contract):
    path = copy_of_the_packages / module
    path.write_text(path.read_text() + f"\n{back_import}  # the break under test\n")
    result = lint_imports(copy_of_the_packages)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if "BROKEN" in line]
    assert any(contract in line for line in broken), result.stdout
    assert f"{Path(module).stem} ->" in result.stdout  # the report names the importer
