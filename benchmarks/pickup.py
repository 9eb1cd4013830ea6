"""Pick-up latency: how long a job submitted to an idle worker stays `queued`, on the embedded default
(SQLite and the filesystem queue) and on Redis, measured from the client: from the POST's answer to
the first GET that sees another status (polled every 10 ms). Each job is tiny and ends before the next
one is sent, after a pause of IDLE_SECONDS, so the worker is idle (its next child forked and ready) at
every submission.

    .venv/bin/python -m benchmarks.pickup [--jobs 15] [--backends embedded redis]
"""

import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from benchmarks.common import argument_parser, machine, write_result
from tests.e2e.conftest import TEACHER, job_request
from tests.factories import blobs, save_npz, save_teacher, train_teacher
from tests.servers import redis_url
from tests.stack import ServiceStack

POLL_SECONDS = 0.01
IDLE_SECONDS = 2.0  # a child runs one job, then is replaced: a job sent sooner waits for the replacement
GOAL_SECONDS = 0.5


def pickup_seconds(stack: ServiceStack, request: dict) -> float:
    time.sleep(IDLE_SECONDS)
    job = stack.client.submit(request)
    answered = time.perf_counter()
    while stack.client.job(job["id"])["status"] == "queued":
        time.sleep(POLL_SECONDS)
    seen = time.perf_counter()
    ended = stack.client.wait_for_job(job["id"])
    assert ended["status"] == "succeeded", ended["error"]
    return seen - answered


def measure(stack: ServiceStack, folder: Path, jobs: int) -> list[float]:
    x, y = blobs(300, seed=0)
    teacher = stack.client.upload(
        save_teacher(folder / "teacher.safetensors", train_teacher(TEACHER, x, y, epochs=2)), "teacher"
    )
    train = stack.client.upload(save_npz(folder / "train.npz", x, y), "dataset")
    request = job_request(teacher["id"], train["id"], training={"epochs": 1})
    pickup_seconds(stack, request)  # the first job also warms the worker's imports
    return [pickup_seconds(stack, request) for _ in range(jobs)]


def main() -> None:
    parser = argument_parser(__doc__, "pickup")
    parser.add_argument("--jobs", type=int, default=15)
    parser.add_argument("--backends", nargs="+", choices=["embedded", "redis"], default=["embedded", "redis"])
    args = parser.parse_args()
    result = {"benchmark": "pickup", "machine": machine(), "goal_seconds": GOAL_SECONDS}
    for backend in args.backends:
        with tempfile.TemporaryDirectory() as folder, ExitStack() as stack_of:
            broker = stack_of.enter_context(redis_url()) if backend == "redis" else None
            stack = stack_of.enter_context(ServiceStack(Path(folder) / "home", broker_url=broker))
            seconds = measure(stack, Path(folder), args.jobs)
        median = statistics.median(seconds)
        result[backend] = {"median_seconds": round(median, 3), "max_seconds": round(max(seconds), 3),
                           "jobs": len(seconds)}  # fmt: skip
        verdict = "meets" if median <= GOAL_SECONDS else "misses"
        print(f"{backend:<9} queued for {median:.3f} s (median of {len(seconds)}), at most "
              f"{max(seconds):.3f} s: {verdict} the {GOAL_SECONDS} s goal")  # fmt: skip
    write_result(args.out, result)


if __name__ == "__main__":
    main()
