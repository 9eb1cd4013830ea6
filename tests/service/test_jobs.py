"""Creating, reading, listing and cancelling jobs (`/v1/jobs`). No worker runs here: jobs stay queued."""

import time

import pytest

from tests.service.helpers import assert_error, dataset_bytes, job_request, mlp_spec, pt2_teacher, upload_ok

JOB_FIELDS = {
    "id",
    "object",
    "name",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "request",
    "progress",
    "metrics",
    "error",
    "artifacts",
}
TRAINING_DEFAULTS = {
    "epochs": 10,
    "batch_size": 128,
    "learning_rate": 0.001,
    "optimizer": "adam",
    "momentum": 0.9,
    "weight_decay": 0.0,
    "lr_schedule": "constant",
    "warmup_epochs": 0.0,
    "seed": 0,
    "validation_fraction": 0.1,
    "device": "auto",
    "devices": 1,
    "augmentation": {"shift": 0, "flip": False},
    "precision": "auto",
    "compile": False,
    "max_seconds": 86_400.0,  # DISTILL_MAX_JOB_SECONDS
}


def create(client, request: dict, **headers) -> dict:
    response = client.post("/v1/jobs", json=request, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_job_fills_every_default(client, teacher_file, dataset_file):
    before = int(time.time())
    response = client.post("/v1/jobs", json=job_request(teacher_file["id"], dataset_file["id"]))
    assert response.status_code == 201, response.text
    job = response.json()

    assert set(job) == JOB_FIELDS
    assert job["id"].startswith("job-")
    assert job["object"] == "distillation.job"
    assert job["status"] == "queued"
    assert job["name"] is None
    assert before <= job["created_at"] <= int(time.time())
    assert job["started_at"] is None and job["finished_at"] is None
    assert job["metrics"] is None and job["error"] is None
    assert job["artifacts"] == []
    assert job["progress"] == {
        "epoch": 0,
        "epochs": 10,
        "step": 0,
        "total_steps": 0,
        "fraction": 0.0,
        "eta_seconds": None,
    }

    request = job["request"]
    assert request["teacher"] == {
        "file_id": teacher_file["id"],
        "format": "safetensors",  # filled in from the uploaded file
        "architecture": {**mlp_spec(hidden_sizes=[16]), "dropout": 0.0, "activation": "relu"},
        "weight": 1.0,
    }
    assert request["teachers"] is None
    assert request["student"] == {
        "architecture": {**mlp_spec(hidden_sizes=[4]), "dropout": 0.0, "activation": "relu"},
        "derive": None,
        "hf": None,
        "lora": None,
    }
    assert request["export"] == ["onnx"]
    assert request["dataset"] == {
        "train_file_id": dataset_file["id"],
        "validation_file_id": None,
        "tokenizer_file_id": None,
        "max_length": None,
        "packing": None,
        "truncation": "error",
    }
    assert request["distillation"] == {
        "temperature": 4.0,
        "final_temperature": None,
        "temperature_schedule": "linear",
        "alpha": 0.9,
        "beta": 0.1,
        "soft_loss": "kl",
        "ensemble": "mean",
        "method": "standard",
        "peers": [],
        "mutual_weight": 1.0,
        "generations": 2,
        "search": {
            "temperatures": [1.0, 2.0, 4.0, 8.0, 16.0],
            "alphas": [0.5, 0.9],
            "learning_rates": [3e-4, 1e-3, 3e-3],
            "soft_losses": ["kl", "dkd", "dist"],
            "trial_epochs": 1,
            "budget_epochs": None,
            "reduction_factor": 3,
        },
        "features": [],
        "dkd": {"target_weight": 1.0, "non_target_weight": 8.0},
        "dist": {"inter_weight": 1.0, "intra_weight": 1.0},
        "logit_standardization": False,
        "teacher_cache": "auto",
        "teacher_cache_precision": "float32",
        "divergence": "forward_kl",
        "jsd_beta": 0.5,
        "top_k": 64,
        "sequence_level": None,
        "on_policy": None,
        "alone_reference": False,
        "transformer": None,
    }
    assert request["training"] == TRAINING_DEFAULTS
    assert request["name"] is None


def test_create_job_keeps_given_values(client, teacher_file, dataset_file):
    validation_file = upload_ok(client, dataset_bytes(8), "dataset", "validation.npz")
    request = job_request(
        teacher_file["id"],
        dataset_file["id"],
        dataset={"train_file_id": dataset_file["id"], "validation_file_id": validation_file["id"]},
        distillation={"temperature": 2.5, "alpha": 0.0, "beta": 1.0},
        training={"epochs": 3, "batch_size": 16, "learning_rate": 0.01, "seed": 7, "optimizer": "sgd"},
        name="mnist small",
    )
    job = create(client, request)
    assert job["name"] == "mnist small"
    assert job["progress"]["epochs"] == 3
    assert job["request"]["dataset"]["validation_file_id"] == validation_file["id"]
    assert job["request"]["distillation"].items() >= {"temperature": 2.5, "alpha": 0.0, "beta": 1.0}.items()
    training = job["request"]["training"]
    assert training == {
        **TRAINING_DEFAULTS,
        "epochs": 3,
        "batch_size": 16,
        "learning_rate": 0.01,
        "seed": 7,
        "optimizer": "sgd",
    }


def test_create_job_with_pt2_teacher(client, dataset_file):
    teacher = upload_ok(client, pt2_teacher(), "teacher", "teacher.pt2")
    request = job_request(teacher["id"], dataset_file["id"], teacher={"file_id": teacher["id"]})
    job = create(client, request)
    assert job["request"]["teacher"] == {
        "file_id": teacher["id"],
        "format": "pt2",
        "architecture": None,
        "weight": 1.0,
    }


def test_create_job_with_explicit_matching_format(client, teacher_file, dataset_file):
    request = job_request(teacher_file["id"], dataset_file["id"])
    request["teacher"]["format"] = "safetensors"
    assert create(client, request)["request"]["teacher"]["format"] == "safetensors"


def test_create_job_with_cnn_student(client, dataset_file):
    cnn = {"family": "cnn", "input_shape": [1, 2, 2], "num_classes": 3, "widths": [4]}
    teacher = upload_ok(client, pt2_teacher(), "teacher", "teacher.pt2")
    job = create(
        client,
        job_request(
            teacher["id"],
            dataset_file["id"],
            teacher={"file_id": teacher["id"]},
            student={"architecture": cnn},
        ),
    )
    assert job["request"]["student"]["architecture"] == {**cnn, "blocks_per_stage": 1, "dropout": 0.0}


def test_retrieve_job(client, queued_job):
    response = client.get(f"/v1/jobs/{queued_job['id']}")
    assert response.status_code == 200
    assert response.json() == queued_job


def test_retrieve_unknown_job_is_404(client):
    assert_error(client.get("/v1/jobs/job-doesnotexist"), 404, None, "not_found")


def test_new_job_has_a_created_event(client, queued_job):
    response = client.get(f"/v1/jobs/{queued_job['id']}/events")
    assert response.status_code == 200
    page = response.json()
    assert page["object"] == "list" and page["has_more"] is False
    assert len(page["data"]) == 1
    (event,) = page["data"]
    assert set(event) == {"id", "object", "created_at", "level", "message"}
    assert event["object"] == "job.event"
    assert event["level"] == "info"
    assert "queued" in event["message"].lower()
    assert event["created_at"] >= queued_job["created_at"]


def test_new_job_has_no_metrics_and_no_artifacts(client, queued_job):
    assert client.get(f"/v1/jobs/{queued_job['id']}/metrics").json() == {"object": "list", "data": []}
    assert client.get(f"/v1/jobs/{queued_job['id']}/artifacts").json() == {
        "object": "list",
        "data": [],
        "has_more": False,
    }


def test_artifact_of_unfinished_job_is_404(client, queued_job):
    for name in ("student.safetensors", "student.json", "student.pt2", "metrics.json"):
        response = client.get(f"/v1/jobs/{queued_job['id']}/artifacts/{name}")
        error = assert_error(response, 404, None, "not_found")
        assert name in error["message"]


@pytest.mark.parametrize("suffix", ["", "/events", "/metrics", "/artifacts", "/artifacts/student.pt2"])
def test_unknown_job_subresources_are_404(client, suffix):
    assert_error(client.get(f"/v1/jobs/job-doesnotexist{suffix}"), 404, None, "not_found")


# Listing


def test_list_jobs_by_status(client, queued_job):
    queued = client.get("/v1/jobs", params={"status": "queued", "limit": 100}).json()
    assert queued["object"] == "list"
    assert queued["data"][0]["id"] == queued_job["id"]
    assert {job["status"] for job in queued["data"]} == {"queued"}

    succeeded = client.get("/v1/jobs", params={"status": "succeeded", "limit": 100}).json()
    assert queued_job["id"] not in {job["id"] for job in succeeded["data"]}

    everything = client.get("/v1/jobs").json()
    assert everything["data"][0] == queued_job


def test_list_jobs_bogus_status(client):
    error = assert_error(client.get("/v1/jobs", params={"status": "bogus"}), 422, "status", "invalid_request")
    assert "queued" in error["message"]


def test_list_jobs_pagination(client, teacher_file, dataset_file):
    ids = [
        create(client, job_request(teacher_file["id"], dataset_file["id"], name=f"page-{i}"))["id"]
        for i in range(3)
    ]
    first = client.get("/v1/jobs", params={"limit": 2}).json()
    assert [job["id"] for job in first["data"]] == ids[:0:-1]
    assert first["has_more"] is True
    second = client.get("/v1/jobs", params={"limit": 2, "after": ids[1]}).json()
    assert second["data"][0]["id"] == ids[0]
    filtered = client.get("/v1/jobs", params={"limit": 1, "status": "queued", "after": ids[2]}).json()
    assert [job["id"] for job in filtered["data"]] == [ids[1]]


@pytest.mark.parametrize(
    "params, param",
    [({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"after": "job-doesnotexist"}, "after")],
)
def test_list_jobs_bad_page(client, params, param):
    assert_error(client.get("/v1/jobs", params=params), 422, param)


def test_list_jobs_after_outside_the_filter(client, queued_job):
    response = client.get("/v1/jobs", params={"status": "succeeded", "after": queued_job["id"]})
    assert_error(response, 422, "after", "invalid_cursor")


# Cancelling


def test_cancel_queued_job(client, queued_job):
    before = int(time.time())
    response = client.post(f"/v1/jobs/{queued_job['id']}/cancel")
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["id"] == queued_job["id"]
    assert job["status"] == "cancelled"
    assert before <= job["finished_at"] <= int(time.time())
    assert job["error"] is None
    assert client.get(f"/v1/jobs/{queued_job['id']}").json() == job

    events = client.get(f"/v1/jobs/{queued_job['id']}/events").json()["data"]
    assert len(events) == 2
    assert "cancel" in events[-1]["message"].lower()

    cancelled = client.get("/v1/jobs", params={"status": "cancelled", "limit": 100}).json()["data"]
    assert queued_job["id"] in {j["id"] for j in cancelled}
    queued = client.get("/v1/jobs", params={"status": "queued", "limit": 100}).json()["data"]
    assert queued_job["id"] not in {j["id"] for j in queued}


def test_cancel_twice_is_409(client, queued_job):
    assert client.post(f"/v1/jobs/{queued_job['id']}/cancel").status_code == 200
    error = assert_error(client.post(f"/v1/jobs/{queued_job['id']}/cancel"), 409, None, "job_not_cancellable")
    assert "cancelled" in error["message"]
    assert client.get(f"/v1/jobs/{queued_job['id']}").json()["status"] == "cancelled"
    assert len(client.get(f"/v1/jobs/{queued_job['id']}/events").json()["data"]) == 2


def test_cancel_unknown_job_is_404(client):
    assert_error(client.post("/v1/jobs/job-doesnotexist/cancel"), 404, None, "not_found")


def test_events_as_server_sent_events(client, queued_job):
    client.post(f"/v1/jobs/{queued_job['id']}/cancel")  # a finished job: the stream ends after its events
    with client.stream(
        "GET", f"/v1/jobs/{queued_job['id']}/events", headers={"Accept": "text/event-stream"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    frames = [frame for frame in text.split("\n\n") if frame]
    kinds = [line for frame in frames for line in frame.split("\n") if line.startswith("event:")]
    assert kinds == ["event: job.event", "event: job.event", "event: end"]
    assert "Job cancelled before it started." in frames[1]
    assert frames[2] == 'event: end\ndata: {"status": "cancelled", "error": null}'  # how it ended
