"""The Python client against the real API and worker processes: a job from upload to verified download,
the server's refusals as `APIError`, waiting by stream and by polling, a resumed download."""

import hashlib

import pytest

from distill_client import APIError, Client, WaitTimeout
from tests.e2e.conftest import job_request

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(stack):
    with Client(stack.url, timeout=30, retries=2, backoff_seconds=0.1) as client:
        yield client


@pytest.fixture(scope="module")
def finished_job(client, task):
    teacher = client.upload_file(task.teacher, "teacher")
    train = client.upload_file(task.train, "dataset")
    job = client.create_job(job_request(teacher.id, train.id))
    seen = []
    return client.wait(job.id, timeout=120, on_event=seen.append), seen, train


def test_a_job_from_upload_to_its_verified_student(client, finished_job, tmp_path):
    job, seen, train = finished_job
    assert job.status == "succeeded" and job.finished, job.error
    assert train.format == "npz" and train.purpose == "dataset" and len(train.sha256) == 64
    assert seen[0].message == "Job created and queued." and seen[-1].message.startswith("Job succeeded")
    assert [e.id for e in seen] == [e.id for e in client.list_events(job.id)]  # the stream missed none
    assert job.metrics["student"]["accuracy"] > 0.5
    assert [p.epoch for p in client.metrics(job.id, "loss")] == [1, 2, 3, 4]
    artifacts = {a.name: a for a in client.list_artifacts(job.id)}
    path = client.download_artifact(job.id, "student.pt2", tmp_path / "student.pt2")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == artifacts["student.pt2"].sha256
    assert not (tmp_path / "student.pt2.part").exists()
    assert job.id in {j.id for j in client.list_jobs(status="succeeded")}


def test_a_download_resumes_from_the_part_an_earlier_try_left(client, finished_job, tmp_path):
    job = finished_job[0]
    whole = client.download_artifact(job.id, "student.safetensors", tmp_path / "whole").read_bytes()
    part = tmp_path / "student.safetensors.part"
    part.write_bytes(whole[: len(whole) // 3])
    resumed = client.download_artifact(job.id, "student.safetensors", tmp_path / "student.safetensors")
    assert resumed.read_bytes() == whole


def test_a_damaged_part_is_downloaded_again_from_the_start(client, finished_job, tmp_path):
    job = finished_job[0]
    whole = client.download_artifact(job.id, "student.json", tmp_path / "whole").read_bytes()
    (tmp_path / "student.json.part").write_bytes(b"X" * (len(whole) // 2))
    assert client.download_artifact(job.id, "student.json", tmp_path / "student.json").read_bytes() == whole


def test_refusals_carry_the_servers_code_message_and_field(client, finished_job):
    train = finished_job[2]
    request = job_request(train.id, train.id)
    with pytest.raises(APIError) as refused:
        client.create_job(request)
    assert refused.value.status == 422 and refused.value.code == "wrong_file_purpose"
    assert refused.value.param == "teacher.file_id" and "teacher" in refused.value.message
    with pytest.raises(APIError) as missing:
        client.get_job("job-doesnotexist")
    assert (missing.value.status, missing.value.code) == (404, "not_found")


def test_waiting_by_polling_and_running_out_of_time(client, task, stack):
    teacher = client.upload_file(task.teacher, "teacher")
    train = client.upload_file(task.train, "dataset")
    slow = client.create_job(job_request(teacher.id, train.id, training={"epochs": 30}))
    with pytest.raises(WaitTimeout) as late:
        client.wait(slow.id, timeout=0.5)
    assert late.value.job.id == slow.id and not late.value.job.finished
    assert client.cancel_job(slow.id).status in {"cancelling", "cancelled"}
    polling = Client(stack.url, timeout=30)
    polling.follow_events = lambda *args, **kwargs: iter(())  # as if the stream were unavailable
    assert polling.wait(slow.id, timeout=60, poll_seconds=0.2).status == "cancelled"
