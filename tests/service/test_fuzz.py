"""Fuzz every operation of the service's own OpenAPI document (schemathesis): no 5xx, and every answer
is one the document describes (a documented status code, its content type, headers and body schema).

Bounded and derandomized, so a run is repeatable and takes seconds: each operation gets schemathesis'
coverage cases (boundary and type-violating values) and `MAX_EXAMPLES` generated cases, valid and invalid,
without shrinking. Jobs the fuzzer creates stay `queued` (no worker runs here).

Random ids only ever reach 404s, so `test_real_resources_conform` then calls the operations on real
files (each format) and a succeeded job with artifacts, with the download headers (`Range`, `If-Range`,
`If-None-Match`) the document does not list as parameters.
"""

import hashlib

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select, update

from core.models import Artifact, Job, JobMetric
from service.main import create_app
from tests.service.helpers import (
    TOKENIZER,
    dataset_bytes,
    job_request,
    mlp_spec,
    pt2_teacher,
    safetensors_teacher,
    upload_ok,
)

MAX_EXAMPLES = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# Loaded at collection (schemathesis makes one test per operation from it); tests/conftest.py has set the
# environment by then. Requests go to the app in-process; the `client` fixture migrates the database.
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())
schema.config.generation.update(deterministic=True, no_shrink=True, database="none")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case, real_resources):
    if case.operation.label == "POST /v1/jobs" and isinstance(case.body, dict):
        complete_job_request(case.body, real_resources["files"])
        key = (case.headers or {}).get("idempotency-key")
        if isinstance(key, str):  # one key for every body would make all but the first a 409
            digest = hashlib.sha256(repr(case.body).encode()).hexdigest()[:16]
            case.headers["idempotency-key"] = f"{key[:200]}-{digest}"
    case.call_and_validate(checks=CHECKS)


DATASET_FILES = {"train_file_id": "npz", "validation_file_id": "npz", "tokenizer_file_id": "tokenizer"}


def complete_job_request(body: dict, files: dict) -> None:
    """Random file ids stop a job request at its first check (404), and the document cannot say that a
    request needs `teacher` or `teachers`, and a student `architecture` or `derive`: name real files of
    the right purpose and fill those in, so the fuzzed fields reach the checks behind them."""
    if body.get("teacher") is None and body.get("teachers") is None:
        body["teacher"] = {"file_id": files["pt2"]["id"]}
    student = body.get("student")
    if isinstance(student, dict) and student.get("architecture") is None and student.get("derive") is None:
        student["architecture"] = mlp_spec()
    for teacher in [body.get("teacher"), *(body.get("teachers") or [])]:
        if isinstance(teacher, dict) and isinstance(teacher.get("file_id"), str):
            pt2 = teacher.get("format", "pt2" if teacher.get("architecture") is None else None) == "pt2"
            teacher["file_id"] = files["pt2" if pt2 else "safetensors"]["id"]
    dataset = body.get("dataset")
    if isinstance(dataset, dict):
        for field, kind in DATASET_FILES.items():
            if isinstance(dataset.get(field), str):
                dataset[field] = files[kind]["id"]
        architecture = student.get("architecture") if isinstance(student, dict) else None
        if not (isinstance(architecture, dict) and architecture.get("family") == "transformer"):
            dataset.pop("tokenizer_file_id", None)  # only a transformer student reads text


# Real resources


METRICS = {
    "teacher": {"accuracy": 0.9, "parameters": 1000},
    "student": {"accuracy": 0.85, "parameters": 100},
    "agreement": 0.9,
    "accuracy_retention": 0.944,
    "compression": 10.0,
}
ARTIFACTS = {  # name: (content type, bytes), as the worker stores them
    "student.safetensors": ("application/octet-stream", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "),
    "student.json": ("application/json", b'{"family": "mlp"}'),
    "student.pt2": ("application/zip", b"PK\x05\x06" + bytes(18)),
    "metrics.json": ("application/json", b"{}"),
}


def succeeded_job(resources, queued: dict) -> dict:
    """Make a queued job look as the worker leaves a succeeded one: metrics, a series, artifacts."""
    storage = resources.storage
    with resources.database.sessions() as session:
        moved = session.execute(
            update(Job)
            .where(Job.id == queued["id"], Job.status == "queued")
            .values(status="succeeded", metrics=METRICS)
        )
        assert moved.rowcount == 1
        job_pk = session.scalar(select(Job.pk).where(Job.id == queued["id"]))
        for name, (content_type, content) in ARTIFACTS.items():
            key = f"jobs/default/{queued['id']}/{name}"
            stored = storage.write(key, [content])
            session.add(Artifact(job_pk=job_pk, name=name, bytes=stored.bytes, sha256=stored.sha256,
                                 content_type=content_type, storage_key=key))  # fmt: skip
        session.add_all(JobMetric(job_pk=job_pk, step=1, epoch=1, name=name, value=value)
                        for name, value in (("loss", 0.5), ("val_accuracy", None)))  # fmt: skip
        session.commit()
    return queued


@pytest.fixture(scope="module")
def real_resources(client, resources) -> dict:
    files = {
        "npz": upload_ok(client, dataset_bytes(), "dataset", "train.npz"),
        "jsonl": upload_ok(client, b'{"text": "a", "label": 0}\n', "dataset", "train.jsonl"),
        "safetensors": upload_ok(client, safetensors_teacher(), "teacher", "teacher.safetensors"),
        "pt2": upload_ok(client, pt2_teacher(), "teacher", "teacher.pt2"),
        "tokenizer": upload_ok(client, TOKENIZER, "tokenizer", "tokenizer.json"),
    }
    request = job_request(files["safetensors"]["id"], files["npz"]["id"])
    jobs = [client.post("/v1/jobs", json=request).json() for _ in range(2)]
    return {"files": files, "queued": jobs[0], "succeeded": succeeded_job(resources, jobs[1])}


def download_headers(sha256: str) -> list[dict]:
    etag = f'"{sha256}"'
    return [
        {},
        {"Range": "bytes=0-3"},
        {"Range": "bytes=-2"},
        {"Range": "bytes=999999-"},  # unsatisfiable: 416
        {"Range": "bytes=0-3", "If-Range": '"stale"'},
        {"If-None-Match": etag},  # 304
        {"If-None-Match": "*"},
    ]


def real_cases(real_resources: dict):
    files, queued, succeeded = real_resources["files"], real_resources["queued"], real_resources["succeeded"]
    for file in files.values():
        path = {"file_id": file["id"]}
        yield "/v1/files/{file_id}", "GET", path, {}, {}
        for headers in download_headers(file["sha256"]):
            yield "/v1/files/{file_id}/content", "GET", path, headers, {}
    yield "/v1/files", "GET", {}, {}, {"after": files["npz"]["id"], "limit": 1}
    yield "/v1/files/{file_id}", "DELETE", {"file_id": files["npz"]["id"]}, {}, {}  # in use: 409
    for job in (queued, succeeded):
        path = {"job_id": job["id"]}
        yield "/v1/jobs/{job_id}", "GET", path, {}, {}
        yield "/v1/jobs/{job_id}/events", "GET", path, {}, {}
        yield "/v1/jobs/{job_id}/metrics", "GET", path, {}, {}
        yield "/v1/jobs/{job_id}/artifacts", "GET", path, {}, {}
        yield "/v1/jobs/{job_id}/artifacts/{name}", "GET", {**path, "name": "student.json"}, {}, {}
    yield "/v1/jobs/{job_id}/events", "GET", {"job_id": succeeded["id"]}, {"Accept": "text/event-stream"}, {}
    yield "/v1/jobs", "GET", {}, {}, {"status": "succeeded", "limit": 1}
    for name, (_content_type, content) in ARTIFACTS.items():
        for headers in download_headers(hashlib.sha256(content).hexdigest()):
            path = {"job_id": succeeded["id"], "name": name}
            yield "/v1/jobs/{job_id}/artifacts/{name}", "GET", path, headers, {}
    yield "/v1/jobs/{job_id}/cancel", "POST", {"job_id": succeeded["id"]}, {}, {}  # finished: 409
    yield "/v1/jobs/{job_id}/cancel", "POST", {"job_id": queued["id"]}, {}, {}


def test_real_resources_conform(real_resources):
    failures, statuses = [], set()
    for path, method, path_parameters, headers, query in real_cases(real_resources):
        case = schema[path][method].Case(path_parameters=path_parameters, headers=headers, query=query)
        try:
            statuses.add(case.call_and_validate(checks=CHECKS).status_code)
        except FailureGroup as group:  # collect them all: one run shows every mismatch
            problems = "; ".join(str(failure).splitlines()[0] for failure in group.exceptions)
            failures.append(f"{method} {path} {headers} {query}: {problems}")
    assert not failures, "\n\n".join(failures)
    assert {200, 206, 304, 409, 416} <= statuses, statuses  # the cases reached what they were made for
