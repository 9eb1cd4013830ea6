"""What importing the engine pulls in: the API must not pay for torch, the engine needs no web stack."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imported_top_level_modules(statement: str) -> set[str]:
    code = f"{statement}; import sys; print(' '.join(sorted({{name.split('.')[0] for name in sys.modules}})))"
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(completed.stdout.split())


def test_specs_import_without_torch():
    modules = imported_top_level_modules("import engine, engine.specs, engine.errors, engine.layer_map")
    assert "torch" not in modules and "numpy" not in modules


def test_engine_imports_no_web_framework_task_queue_or_database():
    modules = imported_top_level_modules("import engine.pipeline")
    assert "torch" in modules
    assert not modules & {"fastapi", "starlette", "celery", "kombu", "sqlalchemy", "service"}
