"""A job is bounded at submission, from its specs alone: the parameters of each model, the memory its
training needs, the epochs of all its runs and the samples they train on. Over a bound, a 422 names the
field and the figures, and no job is created; at the bound, the job is accepted."""

import pytest

from core.config import Settings
from service.main import create_app
from tests.service.helpers import (
    assert_error,
    dataset_bytes,
    job_request,
    mlp_spec,
    newest_id,
    pt2_teacher,
    safetensors_teacher,
    upload_ok,
)
from tests.service.tenants import client_for, make_settings

HUGE = mlp_spec(hidden_sizes=[65_536, 65_536])  # 4.3e9 parameters


def refused(client, request: dict, param: str, code: str) -> str:
    newest = newest_id(client, "jobs")
    error = assert_error(client.post("/v1/jobs", json=request), 422, param, code)
    assert newest_id(client, "jobs") == newest
    return error["message"]


def test_a_student_of_billions_of_parameters_is_refused(client, teacher_file, dataset_file):
    request = job_request(teacher_file["id"], dataset_file["id"], student={"architecture": HUGE})
    message = refused(client, request, "student.architecture", "model_too_large")
    assert "4,295,557,123 parameters" in message and "DISTILL_MAX_MODEL_PARAMETERS" in message


def test_a_small_file_declaring_a_huge_teacher_is_refused_before_any_worker_builds_it(client, dataset_file):
    tiny = upload_ok(client, safetensors_teacher(), "teacher", "tiny.safetensors")  # some hundred bytes
    teacher = {"file_id": tiny["id"], "architecture": HUGE}
    request = job_request(tiny["id"], dataset_file["id"], teacher=teacher)
    refused(client, request, "teacher.architecture", "model_too_large")


def test_a_peer_counts_like_the_student(client, teacher_file, dataset_file):
    distillation = {"method": "mutual", "peers": [HUGE]}
    request = job_request(teacher_file["id"], dataset_file["id"], distillation=distillation)
    refused(client, request, "distillation.peers.0", "model_too_large")


def test_epochs_multiplied_by_trials_and_generations_are_refused(client, teacher_file, dataset_file):
    """Accepted before: 10,000 epochs, three generations and a search planned 35,600 epochs."""
    distillation = {"temperature": "auto", "alpha": "auto", "search": {"trial_epochs": 100}}
    request = job_request(
        teacher_file["id"], dataset_file["id"], distillation=distillation, training={"epochs": 10_000}
    )
    message = refused(client, request, "training.epochs", "too_many_epochs")
    assert "20,000 model-epochs" in message  # the search spends up to the run's own epochs
    generations = {"method": "born_again", "generations": 3}
    request = job_request(
        teacher_file["id"], dataset_file["id"], distillation=generations, training={"epochs": 4_000}
    )
    assert "12,000 model-epochs" in refused(client, request, "training.epochs", "too_many_epochs")


@pytest.fixture
def small_server(tmp_path):
    """A server that gives a job 64 MiB and trains models of up to 100,000 parameters."""
    settings = make_settings(tmp_path, max_job_memory_bytes=64 * 1024**2, max_model_parameters=100_000)
    with client_for(create_app(settings)) as client:
        yield client


def test_the_memory_bound_names_what_needs_the_memory(small_server):
    teacher = upload_ok(small_server, safetensors_teacher(), "teacher", "teacher.safetensors")
    dataset = upload_ok(small_server, dataset_bytes(), "dataset", "train.npz")
    wide = mlp_spec(hidden_sizes=[20_000])  # 140,003 parameters... over the parameter bound
    request = job_request(teacher["id"], dataset["id"], student={"architecture": wide})
    refused(small_server, request, "student.architecture", "model_too_large")
    request = job_request(
        teacher["id"], dataset["id"], student={"architecture": mlp_spec(hidden_sizes=[9_000])},
        training={"batch_size": 1024},
    )  # fmt: skip
    message = refused(small_server, request, "training.batch_size", "memory_exceeded")
    assert "the students in training" in message and "0.0625 GiB" in message
    request["training"]["batch_size"] = 16
    assert small_server.post("/v1/jobs", json=request).status_code == 201
    request["training"] |= {"batch_size": 1024, "devices": 64}  # 16 a device: each holds its share of a step
    assert small_server.post("/v1/jobs", json=request).status_code == 201


def test_epochs_times_training_samples_are_bounded(tmp_path):
    settings = make_settings(tmp_path, max_job_sample_epochs=1_000)
    with client_for(create_app(settings)) as client:
        teacher = upload_ok(client, safetensors_teacher(), "teacher", "teacher.safetensors")
        dataset = upload_ok(client, dataset_bytes(n=16), "dataset", "train.npz")
        request = job_request(teacher["id"], dataset["id"], training={"epochs": 63})
        message = refused(client, request, "training.epochs", "too_many_epochs")
        assert "over 16 training samples: 1,008 sample-epochs" in message
        assert "DISTILL_MAX_JOB_SAMPLE_EPOCHS" in message
        request["training"]["epochs"] = 62
        assert client.post("/v1/jobs", json=request).status_code == 201


def test_a_pt2_teacher_counts_a_parameter_for_every_four_bytes(tmp_path):
    settings = make_settings(tmp_path, max_model_parameters=50)
    with client_for(create_app(settings)) as client:
        pt2 = upload_ok(client, pt2_teacher(), "teacher", "teacher.pt2")
        dataset = upload_ok(client, dataset_bytes(), "dataset", "train.npz")
        request = job_request(pt2["id"], dataset["id"], teacher={"file_id": pt2["id"]})
        message = refused(client, request, "teacher.file_id", "model_too_large")
        assert f"{pt2['bytes'] // 4:,} parameters" in message


def test_a_time_bound_above_the_servers_is_refused_and_one_at_it_accepted(tmp_path):
    settings = make_settings(tmp_path, max_job_seconds=600)
    with client_for(create_app(settings)) as client:
        teacher = upload_ok(client, safetensors_teacher(), "teacher", "teacher.safetensors")
        dataset = upload_ok(client, dataset_bytes(), "dataset", "train.npz")
        request = job_request(teacher["id"], dataset["id"], training={"max_seconds": 601})
        message = refused(client, request, "training.max_seconds", "max_seconds_too_large")
        assert "601 s" in message and "600 s" in message and "DISTILL_MAX_JOB_SECONDS" in message
        request["training"]["max_seconds"] = 600
        assert client.post("/v1/jobs", json=request).status_code == 201


def test_the_default_bounds_follow_the_machine():
    settings = Settings()
    assert settings.job_memory_limit > 0 and settings.model_parameter_limit == settings.job_memory_limit // 16
    assert settings.max_job_epochs == 10_000 and settings.max_job_sample_epochs == 10**9
    assert settings.max_job_seconds == 24 * 3600
