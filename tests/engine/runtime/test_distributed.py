"""A job over two processes (gloo, on the CPU), started as torchrun would: each rank takes its share of
every step and DistributedDataParallel averages the students' gradients; rank 0 alone reports and exports.
It trains as one process does, in as many steps, up to rounding, and all ranks stop together."""

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from engine.pipeline import JobFiles, run_distillation
from engine.plan.errors import JobCancelled
from engine.plan.sizes import device_share
from engine.plan.specs import EngineJob
from engine.runtime.distributed import Ranks, SilentReporter, join_ranks, leave_ranks
from tests.engine.factories import RecordingReporter

RANKS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rank(rank: int, port: int, job: EngineJob, files: JobFiles, out: Path) -> None:
    """One rank (torch.multiprocessing's entry): the job, then the job again with rank 0's reporter asking
    to stop at its 25th check (the teacher-cache pass checks 19 times before the first step). It writes
    what it saw to `out/rank-<rank>.json`."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(RANKS),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    ranks = join_ranks(torch.device("cpu"))
    seen = {}
    try:
        reporter = RecordingReporter() if ranks.main else SilentReporter()
        result = run_distillation(job, files, out / f"rank-{rank}", reporter, ranks=ranks)
        seen["metrics"] = None if result is None else result.metrics
        if ranks.main:
            seen |= {"progress": reporter.progress_calls, "metric_calls": reporter.metric_calls}
        with pytest.raises(JobCancelled) as cancelled:
            stopping = RecordingReporter(stop_after=25) if ranks.main else SilentReporter()
            run_distillation(job, files, out / f"cancelled-{rank}", stopping, ranks=ranks)
        seen["cancelled"] = str(cancelled.value)
    finally:
        leave_ranks()
        (out / f"rank-{rank}.json").write_text(json.dumps(seen))


def test_ranks_share_each_epoch_in_equal_parts_that_cover_it():
    order = torch.randperm(11)
    shards = [Ranks(rank, 3).shard(order) for rank in range(3)]
    assert [len(shard) for shard in shards] == [4, 4, 4]
    assert set(torch.cat(shards).tolist()) == set(range(11))  # one sample twice: the padding
    assert Ranks(0, 1).shard(order).equal(order)
    assert Ranks(0, 2).steps(540, 32) == Ranks().steps(540, 32) == 17
    assert device_share(33, 2) == 17


@pytest.fixture(scope="module")
def one_process(blob_task, make_job, tmp_path_factory):
    files = JobFiles([blob_task.teacher_path], blob_task.train_path)
    reporter = RecordingReporter()
    result = run_distillation(make_job(), files, tmp_path_factory.mktemp("one"), reporter)
    return result, reporter


@pytest.fixture(scope="module")
def two_processes(blob_task, make_job, tmp_path_factory) -> tuple[list[dict], Path]:
    """What each of the two ranks saw (see `run_rank`), and their folders."""
    out = tmp_path_factory.mktemp("two")
    files = JobFiles([blob_task.teacher_path], blob_task.train_path)
    mp.spawn(run_rank, args=(free_port(), make_job(training={"devices": 2}), files, out), nprocs=RANKS)
    return [json.loads((out / f"rank-{rank}.json").read_text()) for rank in range(RANKS)], out


def test_two_processes_train_as_one_does_in_as_many_steps(one_process, two_processes):
    (main, other), out = two_processes
    result, reporter = one_process
    assert other["metrics"] is None  # rank 1 reports and exports nothing
    assert abs(main["metrics"]["student"]["accuracy"] - result.metrics["student"]["accuracy"]) < 0.05
    assert main["metrics"]["student"]["accuracy"] > 0.9
    assert main["metrics"].keys() == result.metrics.keys()
    assert [tuple(call) for call in main["progress"]] == reporter.progress_calls
    # 540 samples and 32 a step split evenly: each step sees the same samples, summed in another order.
    assert [values for _, _, values in main["metric_calls"]] == [
        pytest.approx(values, rel=1e-5) for _, _, values in reporter.metric_calls
    ]
    assert sorted(path.name for path in (out / "rank-0").iterdir()) == [
        "metrics.json", "student.json", "student.pt2", "student.safetensors",
    ]  # fmt: skip
    assert list((out / "rank-1").iterdir()) == []


def test_all_ranks_stop_at_the_step_where_rank_0_sees_the_cancel(two_processes):
    (main, other), _ = two_processes
    assert main["cancelled"] == other["cancelled"] == "stopped at step 5 of 68"
