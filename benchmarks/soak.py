"""Soak: many tenants at once, valid and hostile requests mixed, workers SIGKILLed all along.

Starts the service with keys on (an API process and `--workers` worker processes), gives each of
`--tenants` tenants a key and its own files, and submits `--jobs` requests at once from 16 threads:
valid jobs (a few seeds, each submitted several times) and hostile ones, refused at submission or
failing in a worker. Every `--kill-every` seconds one worker is SIGKILLed with its children, as a lost
machine would be, and a new one started. At the end it checks, and prints with its figures:

- every valid job succeeded exactly once, and jobs of one request gave the same student bit for bit,
  however often they were killed;
- every hostile request got the answer it should (a 4xx naming the field, or a `failed` job with its
  own error code), never a 5xx, `internal_error` or `worker_lost`;
- no tenant lists or reads another's jobs;
- the database and the storage agree: every file and artifact the database names is stored with its
  size, nothing is stored that it does not name, and no checkpoint is left behind.

    .venv/bin/python -m benchmarks.soak [--jobs 200] [--tenants 4] [--workers 2] [--kill-every 30]
                                        [--backends embedded|postgres-redis]

It exits 1 if a check fails. About 10 minutes on 2 CPU cores.
"""

import argparse
import hashlib
import itertools
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import select

from benchmarks.common import RESULTS, machine, write_result
from core.config import Settings
from core.db import Database
from core.models import Artifact, File
from distill_client import Client
from engine.plan.specs import MLPSpec
from tests.factories import blobs, save_npz, save_teacher, train_teacher
from tests.servers import postgres_database, redis_url
from tests.service.helpers import npz_bytes
from tests.stack import ServiceStack

TEACHER = MLPSpec(input_shape=[16], num_classes=4, hidden_sizes=[64, 64])
SEEDS = 5  # valid jobs repeat these requests, so their students can be compared
TERMINAL = {"succeeded", "failed", "cancelled"}
UNCLEAR = {"internal_error", "worker_lost"}


@dataclass
class Tenant:
    name: str
    client: httpx.Client  # raw requests, hostile ones too (an empty Idempotency-Key)
    api: Client  # reads, paged
    files: dict[str, str] = field(default_factory=dict)  # role -> file id
    jobs: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    case: str
    tenant: str
    status: int
    code: str | None  # the error's code, at submission or when the job failed
    job_id: str | None = None
    job: dict | None = None


def prepare_files(folder: Path) -> dict[str, bytes]:
    x, y = blobs(1200, seed=0)
    teacher = save_teacher(folder / "teacher.safetensors", train_teacher(TEACHER, x, y))
    return {
        "teacher": teacher.read_bytes(),
        "train": save_npz(folder / "train.npz", x, y).read_bytes(),
        "huge_values": npz_bytes(x=(x.astype(np.float64) * 1e300), y=y),
        "labels_beyond_classes": npz_bytes(x=x, y=(y * 3)),  # up to 9, for 4 classes
    }


def request(tenant: Tenant, seed: int = 0, train: str = "train", **overrides) -> dict:
    """A valid job on the tenant's files (`train`: which dataset), with sections overridden."""
    student = {"family": "mlp", "input_shape": [16], "num_classes": 4, "hidden_sizes": [32]}
    body = {
        "teacher": {"file_id": tenant.files["teacher"], "format": "safetensors",
                    "architecture": TEACHER.model_dump()},
        "student": {"architecture": student},
        "dataset": {"train_file_id": tenant.files[train]},
        "distillation": {"temperature": 4.0, "alpha": 0.9, "beta": 0.1},
        "training": {"epochs": 3, "batch_size": 32, "learning_rate": 0.01, "seed": seed},
        "export": [],
    }  # fmt: skip
    for section, values in overrides.items():
        body[section] = {**body[section], **values}
    return body


HUGE = {"architecture": {**TEACHER.model_dump(), "hidden_sizes": [65536, 65536]}}
UNLIKE_ITS_FILE = {"architecture": {**TEACHER.model_dump(), "hidden_sizes": [64]}}

# name -> (the request, given the tenant, another tenant and a seed; its headers; the answers it may get,
# as (HTTP status, error code) pairs: a 201's code is the one its job fails with)
CASES = {
    "valid": (lambda t, o, seed: request(t, seed % SEEDS), {}, {(201, None)}),
    "huge student": (lambda t, o, s: request(t, student=HUGE), {}, {(422, "model_too_large")}),
    "epochs beyond the bound": (  # 3 generations of 4,000 epochs
        lambda t, o, s: request(t, distillation={"method": "born_again", "generations": 3},
                                training={"epochs": 4_000}),
        {}, {(422, "too_many_epochs")},
    ),
    "temperature 1e-300": (
        lambda t, o, s: request(t, distillation={"temperature": 1e-300}), {}, {(422, "invalid_request")}
    ),
    "another tenant's file": (
        lambda t, o, s: request(t, dataset={"train_file_id": o.files["train"]}), {}, {(404, "not_found")}
    ),
    "empty Idempotency-Key": (
        lambda t, o, s: request(t), {"Idempotency-Key": ""}, {(422, "invalid_request")}
    ),
    "declared teacher unlike its file": (
        lambda t, o, s: request(t, teacher=UNLIKE_ITS_FILE), {}, {(201, "teacher_load_failed")}
    ),
    "values beyond float32": (
        lambda t, o, s: request(t, train="huge_values"), {}, {(201, "dataset_invalid")}
    ),
    "labels beyond the classes": (
        lambda t, o, s: request(t, train="labels_beyond_classes"), {},
        {(201, "labels_out_of_range"), (422, "labels_out_of_range")},
    ),
}  # fmt: skip


def mix(jobs: int, rng: random.Random) -> list[str]:
    """Case names in a random order: 60% valid, the rest the hostile kinds in turn."""
    valid = round(jobs * 0.6)
    hostile = [name for name in CASES if name != "valid"]
    names = ["valid"] * valid + list(itertools.islice(itertools.cycle(hostile), jobs - valid))
    rng.shuffle(names)
    return names


def submit(tenant: Tenant, other: Tenant, name: str, seed: int) -> Outcome:
    build, headers, _answers = CASES[name]
    response = tenant.client.post("/v1/jobs", json=build(tenant, other, seed), headers=headers)
    if response.status_code == 201:
        tenant.jobs.append(response.json()["id"])
        return Outcome(name, tenant.name, 201, None, response.json()["id"])
    json_body = response.headers.get("content-type", "").startswith("application/json")
    code = response.json().get("error", {}).get("code") if json_body else None
    return Outcome(name, tenant.name, response.status_code, code)


class Killer(threading.Thread):
    """SIGKILLs one worker (oldest first) every `every` seconds and starts another in its place."""

    def __init__(self, stack: ServiceStack, every: float):
        super().__init__(daemon=True)
        self.stack, self.every, self.stop, self.kills = stack, every, threading.Event(), 0
        self.names = itertools.count(len([n for n in stack.processes if n.startswith("worker")]))

    def run(self) -> None:
        while not self.stop.wait(self.every):
            victim = next(name for name in self.stack.processes if name.startswith("worker"))
            self.stack.kill(victim)
            self.kills += 1
            self.stack.start_worker(f"worker-{next(self.names)}")


def wait_all(tenants: list[Tenant], outcomes: list[Outcome], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    by_tenant = {t.name: t for t in tenants}
    pending = [o for o in outcomes if o.job_id]
    while pending and time.monotonic() < deadline:
        for outcome in pending:
            outcome.job = by_tenant[outcome.tenant].client.get(f"/v1/jobs/{outcome.job_id}").json()
        pending = [o for o in pending if o.job["status"] not in TERMINAL]
        time.sleep(1)
    for outcome in outcomes:
        if outcome.job and outcome.job["status"] == "failed":
            outcome.code = outcome.job["error"]["code"]


def job_events(tenant: Tenant, job_id: str) -> list[str]:
    return [event.message for event in tenant.api.list_events(job_id)]


def check_answers(tenants: list[Tenant], outcomes: list[Outcome]) -> list[str]:
    problems = []
    by_tenant = {t.name: t for t in tenants}
    students: dict[int, set[str]] = {}
    for o in outcomes:
        answers = CASES[o.case][2]
        status = o.job["status"] if o.job else None
        if o.case == "valid":
            if status != "succeeded":
                problems.append(f"valid job {o.job_id}: {status} {o.job and o.job['error']}")
                continue
            successes = sum(m.startswith("Job succeeded") for m in job_events(by_tenant[o.tenant], o.job_id))
            if successes != 1:
                problems.append(f"valid job {o.job_id} succeeded {successes} times")
            artifacts = by_tenant[o.tenant].client.get(f"/v1/jobs/{o.job_id}/artifacts").json()["data"]
            student = next(a for a in artifacts if a["name"] == "student.safetensors")
            body = (
                by_tenant[o.tenant].client.get(f"/v1/jobs/{o.job_id}/artifacts/student.safetensors").content
            )
            if hashlib.sha256(body).hexdigest() != student["sha256"]:
                problems.append(f"valid job {o.job_id}: student.safetensors does not match its sha256")
            students.setdefault(o.job["request"]["training"]["seed"], set()).add(student["sha256"])
        elif (o.status, o.code) not in answers or o.code in UNCLEAR or o.status >= 500:
            problems.append(
                f"{o.case!r} ({o.job_id or 'refused'}): got {o.status} {o.code}, wanted one of {answers}"
            )
    problems += [
        f"seed {seed}: {len(shas)} different students" for seed, shas in students.items() if len(shas) > 1
    ]
    return problems


def check_isolation(tenants: list[Tenant]) -> list[str]:
    problems = []
    for tenant in tenants:
        listed = {job.id for job in tenant.api.list_jobs()}
        if listed != set(tenant.jobs):
            problems.append(f"tenant {tenant.name} lists {len(listed)} jobs, made {len(tenant.jobs)}")
        for other in tenants:
            if other is not tenant and other.jobs:
                status = tenant.client.get(f"/v1/jobs/{other.jobs[0]}").status_code
                if status != 404:
                    problems.append(f"tenant {tenant.name} reads {other.name}'s job: {status}")
    return problems


def check_storage(settings: Settings) -> tuple[list[str], dict]:
    """The database's files and artifacts against what is stored, byte counts included."""
    database = Database(settings.resolved_database_url)
    with database.transaction() as session:
        named = dict(session.execute(select(File.storage_key, File.bytes)).all())
        named |= dict(session.execute(select(Artifact.storage_key, Artifact.bytes)).all())
    root = settings.storage_root
    stored = {
        path.relative_to(root).as_posix(): path.stat().st_size for path in root.rglob("*") if path.is_file()
    }
    problems = [f"missing from storage: {key}" for key in named.keys() - stored.keys()]
    problems += [f"stored but named nowhere: {key}" for key in stored.keys() - named.keys()]
    problems += [f"{key}: {stored[key]} bytes stored, {size} in the database" for key, size in named.items()
                 if key in stored and stored[key] != size]  # fmt: skip
    return problems, {"objects_named": len(named), "objects_stored": len(stored)}


def run(args) -> dict:
    home = Path(tempfile.mkdtemp(prefix="distill-soak-"))
    rng = random.Random(0)
    with ExitStack() as stack_of:
        backends = {}
        if args.backends == "postgres-redis":
            backends = {"database_url": stack_of.enter_context(postgres_database()),
                        "broker_url": stack_of.enter_context(redis_url()), "queue": "soak"}  # fmt: skip
        stack = stack_of.enter_context(ServiceStack(
            home / "service", **backends, auth="on", heartbeat_seconds="1", heartbeat_timeout_seconds="10",
            reaper_interval_seconds="2", checkpoint_seconds="1", max_attempts="20",
        ))  # fmt: skip
        for number in range(1, args.workers):
            stack.start_worker(f"worker-{number}")
        files = prepare_files(home)
        tenants = []
        for number in range(args.tenants):
            name = f"tenant-{number}"
            key = stack._cli("keys", "create", "--tenant", name).stdout.strip()
            client = stack_of.enter_context(
                httpx.Client(base_url=stack.url, timeout=60, headers={"Authorization": f"Bearer {key}"})
            )
            tenant = Tenant(name, client, stack_of.enter_context(Client(stack.url, key)))
            for role, content in files.items():
                purpose = "teacher" if role == "teacher" else "dataset"
                response = client.post(
                    "/v1/files", files={"file": (f"{role}.bin", content)}, data={"purpose": purpose}
                )
                response.raise_for_status()
                tenant.files[role] = response.json()["id"]
            tenants.append(tenant)

        killer = Killer(stack, args.kill_every)
        started = time.monotonic()
        killer.start()
        plan = [(tenants[i % len(tenants)], tenants[(i + 1) % len(tenants)], name, rng.randrange(2**31))
                for i, name in enumerate(mix(args.jobs, rng))]  # fmt: skip
        with ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(lambda p: submit(*p), plan))
        submitted = time.monotonic() - started
        wait_all(tenants, outcomes, args.timeout)
        finished = time.monotonic() - started
        killer.stop.set()
        killer.join()

        tenant_of = {t.name: t for t in tenants}
        problems = check_answers(tenants, outcomes)
        problems += check_isolation(tenants)
        storage_problems, objects = check_storage(
            Settings(home=home / "service", database_url=backends.get("database_url"))
        )
        problems += storage_problems
        attempts, requeues = Counter(), 0
        for o in outcomes:
            if o.job_id:
                messages = job_events(tenant_of[o.tenant], o.job_id)
                attempts[sum(m.startswith("A worker picked up the job") for m in messages)] += 1
                requeues += sum(m.startswith("Re-queued") for m in messages)
        return {
            "benchmark": "soak",
            "machine": machine(),
            "backends": args.backends,
            "requests": args.jobs,
            "tenants": args.tenants,
            "workers": args.workers,
            "kill_every_s": args.kill_every,
            "answers": {
                f"{case}: {status} {code}": n
                for (case, status, code), n in sorted(
                    Counter(
                        (o.case, o.status, o.code if o.case != "valid" else o.job and o.job["status"])
                        for o in outcomes
                    ).items()
                )
            },  # fmt: skip
            "jobs_accepted": sum(o.job_id is not None for o in outcomes),
            "workers_killed": killer.kills,
            "requeues": requeues,
            "attempts": dict(sorted(attempts.items())),
            "submitted_in_s": round(submitted, 1),
            "all_ended_in_s": round(finished, 1),
            **objects,
            "problems": problems,
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for every job to end")
    parser.add_argument("--backends", choices=["embedded", "postgres-redis"], default="embedded")
    parser.add_argument(
        "--out", type=Path, help="result JSON (default: benchmarks/results/soak-BACKENDS.json)"
    )
    args = parser.parse_args()
    result = run(args)
    for name, value in result.items():
        if name not in ("machine", "problems"):
            print(f"{name}: {value}")
    print("problems:" if result["problems"] else "no problems", *result["problems"][:50], sep="\n  ")
    write_result(args.out or RESULTS / f"soak-{args.backends}.json", result)
    sys.exit(1 if result["problems"] else 0)


if __name__ == "__main__":
    main()
