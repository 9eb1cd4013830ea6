"""Many stored jobs at once, as a busy service would hold them: their files, resolved requests, progress,
metrics and artifacts of succeeded jobs, errors of failed ones. Bulk-inserted straight into a migrated
database (10,000 jobs in a few seconds), for benchmarks that read them back through the API."""

import hashlib
from itertools import cycle, islice

from sqlalchemy import insert, text

from core.db import Database
from core.job_request import JobCreate
from core.models import DEFAULT_TENANT, Artifact, File, Job, JobFile, new_id

JOBS_PER_FILE_SET = 10  # a teacher, a training and a validation file shared by this many jobs
STATUSES = ["succeeded"] * 6 + ["failed", "cancelled", "running", "queued"]  # the mix, in turn
STARTED = 1_760_000_000
ARTIFACTS = {
    "student.safetensors": ("application/octet-stream", 203_840),
    "student.json": ("application/json", 412),
    "student.pt2": ("application/zip", 231_906),
    "student.onnx": ("application/octet-stream", 206_117),
    "student.int8.pt2": ("application/zip", 84_530),
    "student.int8.onnx": ("application/octet-stream", 57_262),
    "metrics.json": ("application/json", 18_350),
    "README.md": ("text/markdown", 3_104),
}
METRICS = {
    "teacher": {"accuracy": 0.9493, "parameters": 2_395_210,
                "latency_ms": {"batch_1": 0.492, "batch_64": 0.0469}},
    "student": {"accuracy": 0.916, "parameters": 101_770,
                "latency_ms": {"batch_1": 0.0917, "batch_64": 0.0032}},
    "agreement": 0.9391, "accuracy_retention": 0.9649, "compression": 23.535,
    "int8": {"accuracy": 0.9164, "agreement": 0.9962, "bytes": 84_530, "float_bytes": 231_906,
             "latency_ms": {"batch_1": 0.110, "batch_64": 0.0042}},
    "onnx": {"accuracy": 0.916, "agreement": 1.0, "max_abs_difference": 2.86e-06, "bytes": 206_117,
             "latency_ms": {"batch_1": 0.0317, "batch_64": 0.002},
             "int8": {"accuracy": 0.9149, "agreement": 0.9951, "max_abs_difference": 0.0421, "bytes": 57_262,
                      "latency_ms": {"batch_1": 0.036, "batch_64": 0.0015}}},
    "speedup": {"batch_1": 5.37, "batch_64": 14.8}, "latency_device": "cpu",
    "gates": [{"metric": "accuracy_retention", "op": ">=", "threshold": 0.9, "value": 0.9649, "passed": True},
              {"metric": "student.latency_ms.batch_1", "op": "<", "threshold": 0.5, "value": 0.0917,
               "passed": True}],
}  # fmt: skip
ERROR = {"code": "loss_diverged", "message": "The loss became NaN at epoch 3, step 1407: lower the learning "
         "rate or the temperature."}  # fmt: skip


def insert_jobs(database: Database, jobs: int) -> None:
    """`jobs` jobs of the default tenant in a mix of statuses, with their files (a set per
    JOBS_PER_FILE_SET jobs), into an empty migrated database; PostgreSQL's statistics updated after."""
    file_sets = [_file_set(n) for n in range(-(-jobs // JOBS_PER_FILE_SET))]
    statuses = list(islice(cycle(STATUSES), jobs))
    job_rows = [_job(pk, status, file_sets[(pk - 1) // JOBS_PER_FILE_SET])
                for pk, status in enumerate(statuses, start=1)]  # fmt: skip
    with database.transaction() as session:
        session.execute(insert(File), [row for files in file_sets for row in files.values()])
        session.execute(insert(Job), job_rows)
        session.execute(insert(JobFile), [link for job in job_rows for link in _links(job, file_sets)])
        artifacts = [_artifact(job["pk"], name) for job in job_rows if job["status"] == "succeeded"
                     for name in ARTIFACTS]  # fmt: skip
        session.execute(insert(Artifact), artifacts)
        if database.engine.dialect.name == "postgresql":
            session.execute(text("ANALYZE"))  # as autovacuum does within a minute of a bulk load


def _file_set(n: int) -> dict[str, dict]:
    made = STARTED + 3 * n
    return {
        "teacher": _file("teacher", f"teacher-{n}.safetensors", "safetensors", 9_582_128, None, made),
        "train": _file("dataset", f"train-{n}.npz", "npz", 188_160_522, 60_000, made + 1),
        "validation": _file("dataset", f"test-{n}.npz", "npz", 31_360_522, 10_000, made + 2),
    }


def _file(purpose: str, filename: str, format_: str, size: int, samples: int | None, made: int) -> dict:
    file_id = new_id("file")
    return {"id": file_id, "tenant_id": DEFAULT_TENANT, "purpose": purpose, "filename": filename,
            "format": format_, "bytes": size, "sha256": _sha256(file_id), "samples": samples,
            "storage_key": f"files/{DEFAULT_TENANT}/{file_id}", "created_at": made}  # fmt: skip


def _job(pk: int, status: str, files: dict[str, dict]) -> dict:
    created = STARTED + 60 * pk
    ended = status in ("succeeded", "failed", "cancelled")
    epochs = 30
    epoch = {"succeeded": epochs, "failed": 3, "cancelled": 12, "running": 17, "queued": 0}[status]
    return {
        "pk": pk, "id": new_id("job"), "tenant_id": DEFAULT_TENANT, "name": f"mnist-{pk}", "status": status,
        "request": _request(files, f"mnist-{pk}", epochs), "attempts": 0 if status == "queued" else 1,
        "progress": {"epoch": epoch, "epochs": epochs, "step": epoch * 469, "total_steps": epochs * 469,
                     "fraction": epoch / epochs, "eta_seconds": 61.5 if status == "running" else None},
        "metrics": METRICS if status == "succeeded" else None,
        "error": ERROR if status == "failed" else None,
        "created_at": created, "started_at": None if status == "queued" else created + 1,
        "finished_at": created + 45 if ended else None,
    }  # fmt: skip


def _request(files: dict[str, dict], name: str, epochs: int) -> dict:
    """A resolved request, every default filled in, as `POST /v1/jobs` stores it."""
    mlp = {"family": "mlp", "input_shape": [784], "num_classes": 10}
    return JobCreate.model_validate({
        "teacher": {"file_id": files["teacher"]["id"], "format": "safetensors",
                    "architecture": {**mlp, "hidden_sizes": [1200, 1200]}},
        "student": {"architecture": {**mlp, "hidden_sizes": [128]}},
        "dataset": {"train_file_id": files["train"]["id"], "validation_file_id": files["validation"]["id"]},
        "distillation": {"temperature": 4.0, "alpha": 0.9, "beta": 0.1},
        "training": {"epochs": epochs, "batch_size": 128},
        "export": ["onnx", "int8"],
        "gates": [{"metric": "accuracy_retention", "op": ">=", "value": 0.9},
                  {"metric": "student.latency_ms.batch_1", "op": "<", "value": 0.5}],
        "name": name,
    }).model_dump(mode="json")  # fmt: skip


def _links(job: dict, file_sets: list[dict[str, dict]]) -> list[dict]:
    files = file_sets[(job["pk"] - 1) // JOBS_PER_FILE_SET]
    return [{"job_pk": job["pk"], "file_id": row["id"], "role": role} for role, row in files.items()]


def _artifact(job_pk: int, name: str) -> dict:
    content_type, size = ARTIFACTS[name]
    return {"job_pk": job_pk, "name": name, "bytes": size, "sha256": _sha256(f"{job_pk}/{name}"),
            "content_type": content_type, "storage_key": f"jobs/{DEFAULT_TENANT}/{job_pk}/1/{name}",
            "created_at": STARTED + 60 * job_pk + 45}  # fmt: skip


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
