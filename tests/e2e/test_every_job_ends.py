"""No job holds a worker forever: a cancelled job whose teacher never returns ends `cancelled` within
seconds, its process ended by the worker, which then runs the next job; a job past its time bound ends
`failed` (`time_limit_exceeded`) saying how far it got, its checkpoint kept, and a job resubmitted with
`resume_from` goes on from it. On the embedded backends and on the scaled-out ones."""

import re
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.e2e.conftest import TEACHER, job_request
from tests.stack import ServiceStack

pytestmark = pytest.mark.e2e

GRACE_SECONDS = 1.0


@pytest.fixture(
    scope="module", params=["sqlite-filesystem", pytest.param("postgres-redis", marks=pytest.mark.redis)]
)
def stack(request, tmp_path_factory):
    """A worker that ends a job's process a second after the job failed to stop on its own."""
    backends = {}
    if request.param == "postgres-redis":
        backends = {
            "database_url": request.getfixturevalue("postgres_url"),
            "broker_url": request.getfixturevalue("redis_broker_url"),
            "queue": "every-job-ends",
        }
    home = tmp_path_factory.mktemp("stack")
    with ServiceStack(home, **backends, stop_grace_seconds=str(GRACE_SECONDS)) as running:
        yield running


@pytest.fixture(scope="module")
def endless_teacher(tmp_path_factory) -> Path:
    """An ONNX teacher of the task's shapes whose graph loops 2^62 times before its one MatMul."""
    features, classes = TEACHER.input_shape[0], TEACHER.num_classes
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["go_in"], ["go_out"]),
            helper.make_node("Identity", ["x_in"], ["x_out"]),
        ],
        "forever",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("go_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("go_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, None),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Loop", ["trips", "go", "x"], ["looped"], body=body),
            helper.make_node("MatMul", ["looped", "weight"], ["logits"]),
        ],
        "endless",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=[
            numpy_helper.from_array(np.array(2**62, dtype=np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "go"),
            numpy_helper.from_array(np.ones((features, classes), np.float32), "weight"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("endless") / "endless.onnx"
    onnx.save(model, path)
    return path


def test_a_teacher_that_never_returns_is_cancelled_within_seconds_and_the_next_job_runs(
    stack, task, endless_teacher
):
    teacher = stack.client.upload(endless_teacher, "teacher")["id"]
    train = stack.client.upload(task.train, "dataset")["id"]
    endless = {"file_id": teacher, "format": "onnx", "architecture": None}
    stuck = stack.client.submit(job_request(teacher, train, teacher=endless))["id"]
    stack.client.wait_for_job(stuck, timeout=60, until=lambda job: job["status"] == "validating")
    time.sleep(2)  # inside the teacher's first run

    asked = time.monotonic()
    assert stack.client.post(f"/v1/jobs/{stuck}/cancel").json()["status"] == "cancelling"
    job = stack.client.wait_for_job(stuck, timeout=30)
    assert job["status"] == "cancelled" and job["error"] is None, stack.logs()
    assert time.monotonic() - asked < GRACE_SECONDS + 10
    assert any(
        "did not stop within 1 s of a cancel" in message for message in stack.client.event_messages(stuck)
    )

    safetensors = stack.client.upload(task.teacher, "teacher")["id"]
    next_job = stack.client.submit(job_request(safetensors, train))["id"]
    assert stack.client.wait_for_job(next_job, timeout=120)["status"] == "succeeded", stack.logs()
    assert stack.client.job(stuck)["status"] == "cancelled"  # the dead child requeued nothing
    assert stack.processes["worker"].poll() is None


def checkpoints(stack: ServiceStack, job_id: str) -> list[Path]:
    return list(stack.home.glob(f"storage/jobs/*/{job_id}/checkpoint.pt"))


def test_a_job_past_its_time_bound_fails_saying_how_far_it_got_and_a_resubmission_goes_on(stack, task):
    teacher = stack.client.upload(task.teacher, "teacher")["id"]
    train = stack.client.upload(task.train, "dataset")["id"]
    training = {"epochs": 2_000, "batch_size": 16, "max_seconds": 6}
    job_id = stack.client.submit(job_request(teacher, train, training=training))["id"]

    job = stack.client.wait_for_job(job_id, timeout=60)
    assert job["status"] == "failed" and job["error"]["code"] == "time_limit_exceeded", stack.logs()
    step, total = job["progress"]["step"], job["progress"]["total_steps"]
    assert 0 < step < total
    assert f"of {total} (epoch" in job["error"]["message"]
    assert f"Job failed (time_limit_exceeded): {job['error']['message']}" in stack.client.event_messages(
        job_id
    )
    assert checkpoints(stack, job_id)  # for a larger bound to go on

    again = job_request(teacher, train, training=training | {"max_seconds": 8}) | {"resume_from": job_id}
    resumed_id = stack.client.submit(again)["id"]
    resumed = stack.client.wait_for_job(resumed_id, timeout=60)
    assert resumed["error"]["code"] == "time_limit_exceeded", stack.logs()
    found = (
        re.match(r"Resumed from the checkpoint at step (\d+) of", m)
        for m in stack.client.event_messages(resumed_id)
    )
    resumed_at = next(int(match[1]) for match in found if match)
    assert 0 < resumed_at < resumed["progress"]["step"]
    assert checkpoints(stack, resumed_id) and not checkpoints(stack, job_id)  # the resubmission took it over
