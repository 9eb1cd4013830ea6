"""Bad input that only training can reveal: each ends the job `failed` with an error a user can act on,
never a job stuck in `running`. Also cancellation of a running job, and a pt2 CNN teacher."""

import json

import numpy as np
import pytest
import torch

from engine.plan.specs import CNNSpec, MLPSpec
from tests.e2e.conftest import job_request
from tests.factories import blobs, save_npz, train_teacher

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def uploaded(stack, task):
    return {
        "teacher": stack.client.upload(task.teacher, "teacher")["id"],
        "train": stack.client.upload(task.train, "dataset")["id"],
        "validation": stack.client.upload(task.validation, "dataset")["id"],
    }


def run_job(stack, request: dict) -> dict:
    created = stack.client.post("/v1/jobs", json=request)
    assert created.status_code == 201, created.text
    return stack.client.wait_for_job(created.json()["id"])


def assert_failed(stack, job: dict, code: str, *phrases: str) -> None:
    assert job["status"] == "failed", job
    assert job["error"]["code"] == code, job["error"]
    for phrase in phrases:
        assert phrase in job["error"]["message"], job["error"]["message"]
    assert job["artifacts"] == [] and job["metrics"] is None
    events = stack.client.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    assert events[-1]["level"] == "error" and code in events[-1]["message"]


def test_weights_that_do_not_fit_the_architecture_name_the_shapes(stack, uploaded):
    wrong = MLPSpec(input_shape=[16], num_classes=4, hidden_sizes=[32, 64]).model_dump()
    job = run_job(stack, job_request(uploaded["teacher"], uploaded["train"], teacher={"architecture": wrong}))
    assert_failed(stack, job, "teacher_load_failed", "[64, 16]", "[32, 16]")


def test_dataset_the_teacher_rejects(stack, uploaded, tmp_path):
    x, y = blobs(200, dim=12)
    train = stack.client.upload(save_npz(tmp_path / "narrow.npz", x, y), "dataset")["id"]
    student = {"architecture": {"family": "mlp", "input_shape": [12], "num_classes": 4}}
    job = run_job(stack, job_request(uploaded["teacher"], train, student=student))
    assert_failed(stack, job, "teacher_rejected_input", "[12]")


def test_labels_outside_the_classes(stack, uploaded, tmp_path):
    x, y = blobs(200)
    y[:5] = 7
    train = stack.client.upload(save_npz(tmp_path / "labels.npz", x, y), "dataset")["id"]
    job = run_job(stack, job_request(uploaded["teacher"], train))
    assert_failed(stack, job, "labels_out_of_range", "7")


def test_diverging_loss(stack, uploaded, tmp_path):
    x, y = blobs(200)
    train = stack.client.upload(save_npz(tmp_path / "unscaled.npz", x * 1e30, y), "dataset")["id"]
    job = run_job(stack, job_request(uploaded["teacher"], train, training={"optimizer": "sgd"}))
    assert_failed(stack, job, "loss_diverged", "learning_rate")


def test_cancel_a_running_job(stack, uploaded):
    request = job_request(uploaded["teacher"], uploaded["train"], training={"epochs": 2000, "batch_size": 8})
    job_id = stack.client.post("/v1/jobs", json=request).json()["id"]
    running = stack.client.wait_for_job(
        job_id, until=lambda job: job["status"] == "running" and job["progress"]["step"]
    )
    assert running["status"] == "running", stack.logs()

    cancelling = stack.client.post(f"/v1/jobs/{job_id}/cancel").json()
    assert cancelling["status"] in ("cancelling", "cancelled")
    job = stack.client.wait_for_job(job_id, timeout=60)
    assert job["status"] == "cancelled" and job["error"] is None
    assert job["artifacts"] == [] and job["progress"]["step"] < job["progress"]["total_steps"]
    assert stack.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 409


def test_pt2_cnn_teacher_distils_into_a_smaller_cnn(stack, tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    x = rng.normal(0, 0.3, (600, 1, 8, 8)).astype(np.float32)
    for label in range(3):  # each class lights up its own band of rows
        x[y == label, 0, label * 2 : label * 2 + 2, :] += 1.5
    spec = CNNSpec(input_shape=[1, 8, 8], num_classes=3, widths=[8, 16])
    teacher = train_teacher(spec, x, y, epochs=8)
    batch = torch.export.Dim.DYNAMIC
    program = torch.export.export(teacher, (torch.from_numpy(x[:4]),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "teacher.pt2")

    teacher_id = stack.client.upload(tmp_path / "teacher.pt2", "teacher")["id"]
    train_id = stack.client.upload(save_npz(tmp_path / "images.npz", x, y), "dataset")["id"]
    request = {
        "teacher": {"file_id": teacher_id},
        "student": {
            "architecture": {"family": "cnn", "input_shape": [1, 8, 8], "num_classes": 3, "widths": [4]}
        },
        "dataset": {"train_file_id": train_id},
        "training": {"epochs": 3, "batch_size": 32, "learning_rate": 0.01},
    }
    job = run_job(stack, request)
    assert job["status"] == "succeeded", job["error"]
    assert job["request"]["teacher"]["format"] == "pt2"
    assert job["metrics"]["student"]["accuracy"] > 0.8
    assert job["metrics"]["compression"] > 1


def test_event_stream_is_live_until_the_job_ends(stack, uploaded):
    job_id = stack.client.post("/v1/jobs", json=job_request(uploaded["teacher"], uploaded["train"])).json()[
        "id"
    ]
    messages, kind = [], None
    with stack.client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"}, timeout=120
    ) as response:
        for line in response.iter_lines():
            kind = line.removeprefix("event: ") if line.startswith("event: ") else kind
            if line.startswith("data: ") and kind == "end":
                ended = json.loads(line.removeprefix("data: "))
                break
            if line.startswith("data: "):
                messages.append(json.loads(line.removeprefix("data: "))["message"])
    assert ended == {"status": "succeeded", "error": None}
    assert messages[0] == "Job created and queued."
    assert any(m.startswith("Epoch 4/4") for m in messages)
    assert "succeeded" in messages[-1]
    assert stack.client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
