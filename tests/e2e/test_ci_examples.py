"""The CI examples (examples/ci) do what they say: the command both pipelines run, run here as they run
it against the real API and worker, exits 0 for a good student, 4 for one that misses a gate, 1 for a
job that fails."""

import hashlib
import json
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.stack import ROOT

pytestmark = pytest.mark.e2e
EXAMPLES = ROOT / "examples" / "ci"


def pipeline_commands() -> list[str]:
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    steps = workflow["jobs"]["distill"]["steps"]
    github = [step["run"] for step in steps if step.get("run", "").startswith("distill ")]
    gitlab = [line for line in yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())["distill"]["script"]
              if line.startswith("distill ")]  # fmt: skip
    assert github == gitlab, "the two pipelines run different distill commands"
    return github


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A repository as the pipelines see it: ci/job.yaml beside the teacher and data it names."""
    root = tmp_path_factory.mktemp("repository")
    subprocess.run([sys.executable, str(ROOT / "examples" / "toy_teacher.py"), str(root / "ci")], cwd=ROOT,
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    shutil.copy(EXAMPLES / "job.yaml", root / "ci" / "job.yaml")
    return root


def run_pipeline(stack, workspace, job: dict | None = None) -> subprocess.CompletedProcess:
    if job is not None:
        (workspace / "ci" / "job.yaml").write_text(yaml.safe_dump(job))
    shutil.rmtree(workspace / "distilled", ignore_errors=True)
    (command,) = pipeline_commands()
    argv = [sys.executable, "-m", "cli", *shlex.split(command)[1:]]  # `distill`, from this checkout
    env = {**stack.env, "DISTILL_URL": stack.url}
    return subprocess.run(argv, cwd=workspace, env=env, capture_output=True, text=True, timeout=300)


def example_job() -> dict:
    return yaml.safe_load((EXAMPLES / "job.yaml").read_text())


def test_a_student_that_passes_its_gates_exits_0_with_its_artifacts(stack, workspace):
    result = run_pipeline(stack, workspace)
    assert result.returncode == 0, result.stderr
    assert "Gates: 2 of 2 passed" in result.stderr
    distilled = workspace / "distilled"
    assert {p.name for p in distilled.iterdir()} == {
        "student.safetensors", "student.json", "student.pt2", "student.onnx", "metrics.json", "README.md"
    }  # fmt: skip
    card = (distilled / "README.md").read_text()  # the model card
    train_sha256 = hashlib.sha256((workspace / "ci" / "train.npz").read_bytes()).hexdigest()
    assert card.startswith("---\nlibrary_name:") and f"`train.npz` (sha256 `{train_sha256}`)" in card
    assert "- accuracy_retention" in card and "onnxruntime.InferenceSession" in card


def test_a_student_that_misses_a_gate_exits_4_and_keeps_its_artifacts(stack, workspace):
    job = example_job()
    job["gates"][1]["value"] = 1000  # compression
    result = run_pipeline(stack, workspace, job)
    assert result.returncode == 4, result.stderr
    assert (workspace / "distilled" / "student.pt2").is_file()


def test_a_job_that_fails_exits_1(stack, workspace):
    job = example_job()
    job["teacher"]["architecture"]["hidden_sizes"] = [64]  # not the teacher's file
    result = run_pipeline(stack, workspace, job)
    assert result.returncode == 1, result.stderr
    assert "teacher_load_failed" in result.stderr


DEPLOYED = """
import json, sys
import numpy as np
import onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1])
data = np.load(sys.argv[2])
logits = session.run(None, {session.get_inputs()[0].name: data["x"].astype(np.float32)})[0]
print(json.dumps({"accuracy": float((logits.argmax(1) == data["y"]).mean())}))
try:
    import torch
except ImportError:
    pass
else:
    sys.exit("torch is importable where only onnxruntime and numpy should be")
"""


def test_the_student_deploys_with_onnxruntime_and_numpy_only(stack, workspace, tmp_path):
    """What a user deploys: `student.onnx` in a fresh venv with onnxruntime and numpy (at the lock's
    versions, from pip's cache after `make test`'s install), scoring what the job reported."""
    assert run_pipeline(stack, workspace, example_job()).returncode == 0
    venv = tmp_path / "deploy"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    constraints = tmp_path / "constraints.txt"
    pins = [line for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line]
    constraints.write_text("\n".join(pins))
    install = [venv / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check", "-c", constraints,
               "onnxruntime", "numpy"]  # fmt: skip
    subprocess.run(install, check=True, capture_output=True, timeout=600)
    distilled, data = workspace / "distilled", workspace / "ci" / "validation.npz"
    scored = subprocess.run([venv / "bin" / "python", "-c", DEPLOYED, distilled / "student.onnx", data],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    metrics = json.loads((distilled / "metrics.json").read_text())["final"]
    accuracy = json.loads(scored.stdout)["accuracy"]
    assert accuracy == metrics["onnx"]["accuracy"]
    assert abs(accuracy - metrics["student"]["accuracy"]) <= 1 / 300  # one sample, float rounding
