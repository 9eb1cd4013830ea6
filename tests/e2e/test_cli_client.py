"""The `distill` CLI as a CI pipeline runs it, against the real API and worker: each exit code, from
the process itself, and the files it leaves."""

import hashlib
import json
import re
import shlex
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.e2e.conftest import TEACHER, job_request
from tests.stack import ROOT

pytestmark = pytest.mark.e2e


def distill(stack, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**stack.env, "DISTILL_URL": stack.url}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def files(stack, task) -> dict:
    return {purpose: stack.client.upload(path, purpose)["id"]
            for purpose, path in (("teacher", task.teacher), ("dataset", task.train))}  # fmt: skip


def job_file(tmp_path, body: dict, name: str = "job.json"):
    path = tmp_path / name
    path.write_text(json.dumps(body))
    return path


def test_run_uploads_local_files_converts_a_pickled_teacher_waits_and_downloads(stack, task, tmp_path):
    torch.save(load_file(task.teacher), tmp_path / "teacher.pt")  # a user's pickled state dict
    (tmp_path / "train.npz").write_bytes(task.train.read_bytes())
    (tmp_path / "job.yaml").write_text(
        "teacher:\n"
        "  file: teacher.pt\n"
        f"  architecture: {json.dumps(TEACHER.model_dump())}\n"
        "student:\n"
        "  architecture: {family: mlp, input_shape: [16], num_classes: 4, hidden_sizes: [16]}\n"
        "dataset:\n"
        "  train_file: train.npz\n"
        "training: {epochs: 3, batch_size: 64, seed: 0}\n"
    )
    result = distill(stack, "run", str(tmp_path / "job.yaml"), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "Job succeeded" in result.stderr and "Epoch 3/3" in result.stderr  # plain lines in a CI log
    job_id = result.stderr.split("submitted ")[1].split()[0]
    listed = {a["name"]: a["sha256"] for a in stack.client.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]}
    downloaded = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "out").iterdir()}
    assert downloaded == listed
    teacher = stack.client.get(
        f"/v1/files/{stack.client.job(job_id)['request']['teacher']['file_id']}"
    ).json()
    assert teacher["filename"] == "teacher.safetensors" and teacher["format"] == "safetensors"


def test_a_failed_job_exits_1(stack, files, tmp_path):
    unlike = {"file_id": files["teacher"], "architecture": {**TEACHER.model_dump(), "hidden_sizes": [64]}}
    body = job_request(files["teacher"], files["dataset"], teacher=unlike)
    result = distill(stack, "jobs", "create", "-f", str(job_file(tmp_path, body)), "--wait")
    assert result.returncode == 1, result.stderr
    assert "failed (teacher_load_failed)" in result.stderr


def test_a_refused_request_exits_2_naming_the_field(stack, files, tmp_path):
    body = job_request(files["teacher"], files["dataset"], distillation={"temperature": -1})
    result = distill(stack, "jobs", "create", "-f", str(job_file(tmp_path, body)))
    assert result.returncode == 2
    assert "refused: 422" in result.stderr and "distillation.temperature" in result.stderr
    assert distill(stack, "jobs", "frobnicate").returncode == 2  # bad usage


def test_a_cancelled_job_exits_3_and_a_wait_that_runs_out_exits_5(stack, files, tmp_path):
    body = job_request(files["teacher"], files["dataset"], training={"epochs": 200})
    created = distill(stack, "--json", "jobs", "create", "-f", str(job_file(tmp_path, body)))
    job_id = json.loads(created.stdout)["id"]
    late = distill(stack, "jobs", "wait", job_id, "--timeout", "1")
    assert late.returncode == 5, late.stderr
    assert "still" in late.stderr
    assert distill(stack, "jobs", "cancel", job_id).returncode == 0
    waited = distill(stack, "--json", "jobs", "wait", job_id)
    assert waited.returncode == 3, waited.stderr
    assert json.loads(waited.stdout)["status"] == "cancelled"


def test_json_output_is_the_services_objects(stack, files):
    listed = distill(stack, "--json", "files", "list", "--purpose", "teacher")
    assert listed.returncode == 0
    assert files["teacher"] in {f["id"] for f in json.loads(listed.stdout)}


def test_a_failed_gate_exits_4_with_the_student_kept_and_a_passed_one_exits_0(stack, files, tmp_path):
    gates = [{"metric": "student.accuracy", "op": ">=", "value": 0.5},
             {"metric": "compression", "op": ">=", "value": 1000}]  # fmt: skip
    body = job_request(files["teacher"], files["dataset"], gates=gates)
    result = distill(stack, "run", str(job_file(tmp_path, body)), "-o", str(tmp_path / "out"))
    assert result.returncode == 4, result.stderr
    assert "succeeded but failed its gates: compression" in result.stderr
    assert "Gates: 1 of 2 passed" in result.stderr  # the job's event
    assert (tmp_path / "out" / "student.pt2").is_file()
    job_id = result.stderr.split("submitted ")[1].split()[0]
    recorded = stack.client.job(job_id)
    assert recorded["status"] == "succeeded"
    assert [g["passed"] for g in recorded["metrics"]["gates"]] == [True, False]

    body["gates"] = gates[:1]
    passing = distill(stack, "jobs", "create", "-f", str(job_file(tmp_path, body, "passing.json")), "--wait")
    assert passing.returncode == 0, passing.stderr


def test_on_a_terminal_a_live_line_shows_the_progress(stack, files, tmp_path):
    """Under a pseudo-terminal (`script`), rich draws the live line: status, epoch, step, loss."""
    body = job_request(files["teacher"], files["dataset"], training={"epochs": 20})
    job_id = json.loads(
        distill(stack, "--json", "jobs", "create", "-f", str(job_file(tmp_path, body))).stdout
    )["id"]
    command = shlex.join([sys.executable, "-m", "cli", "jobs", "wait", job_id])
    env = {**stack.env, "DISTILL_URL": stack.url, "COLUMNS": "160", "TERM": "xterm"}
    result = subprocess.run(["script", "-qec", command, "/dev/null"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=180)  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert "Job succeeded" in result.stdout and f"{job_id} succeeded" in result.stdout
    assert re.search(r"running  ·  epoch \d+/20  ·  step \d+/\d+", result.stdout), result.stdout[-3000:]
