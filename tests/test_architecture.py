"""The import contracts of pyproject.toml (`lint-imports`): the layers run one way (the CLI, then the API
and the workers apart, then the core, then the engine), the engine's rooms run one way too (from its
pipeline down to its plan), the engine is plain PyTorch, the API and the engine's plan never load torch,
the client stands alone, and no package's modules import each other in a circle. Also: the contracts do
catch a break."""

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
        pytest.param("engine/plan/errors.py", "import core.models", "Layers run one way", id="engine->core"),
        pytest.param("core/storage.py", "import service.main", "Layers run one way", id="core->service"),
        pytest.param("service/deps.py", "import worker.tasks", "Layers run one way", id="service->worker"),
        pytest.param(
            "engine/models/hooks.py",
            "import sqlalchemy",
            "The engine imports no web framework",
            id="engine->sqlalchemy",
        ),
        pytest.param("core/errors.py", "import torch", "never load torch", id="core->torch"),
        pytest.param("engine/plan/sizes.py", "import torch", "never load torch", id="engine plan->torch"),
        pytest.param(
            "engine/models/registry.py",
            "import engine.train.loop",
            "The engine's rooms",
            id="engine models->train",
        ),
        pytest.param(
            "engine/evaluate.py", "import engine.pipeline", "No import circle inside a package", id="circle"
        ),
        pytest.param(
            "distill_client/objects.py", "import core.models", "The client stands alone", id="client->core"
        ),
        pytest.param(
            "worker/ranks/rank.py", "import worker.tasks", "The ranks never import the task", id="rank->task"
        ),
    ],
)
def test_a_back_running_import_breaks_a_contract(copy_of_the_packages, module, back_import, contract):
    path = copy_of_the_packages / module
    path.write_text(path.read_text() + f"\n{back_import}  # the break under test\n")
    result = lint_imports(copy_of_the_packages)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if "BROKEN" in line]
    assert any(contract in line for line in broken), result.stdout
    assert f"{Path(module).stem} ->" in result.stdout  # the report names the importer
