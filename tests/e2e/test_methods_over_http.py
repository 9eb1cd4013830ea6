"""Every distillation method runs from an HTTP job request, through the real worker."""

import io

import pytest
import torch

from tests.e2e.conftest import TEACHER, job_request
from tests.factories import blobs, save_teacher, train_teacher

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def files(stack, task, tmp_path_factory):
    x, y = blobs(1200, seed=0)
    second = save_teacher(
        tmp_path_factory.mktemp("second") / "teacher.safetensors", train_teacher(TEACHER, x, y, seed=3)
    )
    return {
        "teacher": stack.client.upload(task.teacher, "teacher")["id"],
        "second": stack.client.upload(second, "teacher")["id"],
        "train": stack.client.upload(task.train, "dataset")["id"],
        "validation": stack.client.upload(task.validation, "dataset")["id"],
    }


def succeed(stack, request: dict) -> dict:
    created = stack.client.post("/v1/jobs", json=request)
    assert created.status_code == 201, created.text
    job = stack.client.wait_for_job(created.json()["id"])
    assert job["status"] == "succeeded", f"{job['error']}\n{stack.logs()}"
    return job


def test_two_teachers_features_derived_student_and_int8(stack, files):
    request = job_request(files["teacher"], files["train"], files["validation"])
    first = request.pop("teacher")
    request["teachers"] = [{**first, "weight": 2.0}, {**first, "file_id": files["second"]}]
    request["student"] = {"derive": {"depth": 0.5, "width": 0.5, "init": "teacher"}}
    request["distillation"] = {
        "soft_loss": "ce",
        "temperature": 6.0,
        "final_temperature": 2.0,
        "features": [{"teacher": "hidden.1", "student": "hidden.0", "weight": 0.5, "loss": "cosine"}],
    }
    request["export"] = ["int8"]
    job = succeed(stack, request)
    assert job["request"]["student"]["architecture"]["hidden_sizes"] == [32]
    metrics = job["metrics"]
    assert metrics["student"]["accuracy"] > 0.85
    # A student this small is mostly graph, not weights: the size ratio is tested on a larger one.
    assert metrics["int8"]["agreement"] > 0.9 and metrics["int8"]["bytes"] > 0
    names = {point["name"] for point in stack.client.get(f"/v1/jobs/{job['id']}/metrics").json()["data"]}
    assert {"feature_loss", "temperature", "soft_loss"} <= names
    program = stack.client.get(f"/v1/jobs/{job['id']}/artifacts/student.int8.pt2")
    assert program.status_code == 200
    assert torch.export.load(io.BytesIO(program.content)).module()(torch.randn(2, 16)).shape == (2, 4)


def test_mutual_learning(stack, files):
    request = job_request(files["teacher"], files["train"], files["validation"])
    peer = {"family": "mlp", "input_shape": [16], "num_classes": 4, "hidden_sizes": [8]}
    request["distillation"] = {"method": "mutual", "peers": [peer], "alpha": 0.5, "beta": 0.5}
    job = succeed(stack, request)
    assert [s["name"] for s in job["metrics"]["students"]] == ["student", "peer1"]


def test_born_again_with_auto_temperature(stack, files):
    request = job_request(files["teacher"], files["train"], files["validation"])
    request["distillation"] = {
        "method": "born_again",
        "generations": 2,
        "temperature": "auto",
        "search": {"temperatures": [2.0, 8.0], "trial_epochs": 1},
    }
    request["training"] = {**request["training"], "epochs": 2}
    job = succeed(stack, request)
    metrics = job["metrics"]
    assert [g["name"] for g in metrics["generations"]] == ["generation1", "generation2"]
    assert metrics["search"]["temperature"] in (2.0, 8.0) and len(metrics["search"]["trials"]) == 2
    assert job["request"]["distillation"]["temperature"] == "auto"
    assert job["progress"]["epochs"] == 2 + 2 * 2  # trials, then both generations
