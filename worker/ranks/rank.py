"""One rank of a job over several devices, as the launcher's torchrun starts it:
`python -m worker.ranks.rank LAUNCH_FILE`.

Every rank opens the database and the storage from the worker's settings: it reads the job, its
checkpoint and the teacher cache. Rank 0 reports (events, progress, metrics: the job's `DatabaseReporter`),
saves the checkpoints and exports the student into its folder, then writes `result.json` for the task;
the others report nothing. A rank that raises writes `failure.json`, and torchrun stops the others.
"""

import logging
import os
import sys
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import select

from core.job_request import JobCreate, engine_job
from core.models import Job
from core.resources import Resources
from engine.pipeline import DistillResult
from engine.plan.errors import JobCancelled, JobFailed
from engine.runtime.devices import resolve_device
from engine.runtime.distributed import SilentReporter, join_ranks, leave_ranks
from worker.engine_run import distill_here
from worker.ranks.lifeline import LAUNCHER_PID, die_with_parent
from worker.ranks.protocol import Failure, Launch, rank_folder, write_result
from worker.reporter import DatabaseReporter

log = logging.getLogger(__name__)


def main(launch_file: str) -> None:
    die_with_parent(int(os.environ[LAUNCHER_PID]))
    rank = int(os.environ["RANK"])
    folder = rank_folder(Path(launch_file).parent, rank)
    folder.mkdir()
    try:
        result = distill_rank(Launch.read(Path(launch_file)), folder)
        if result is not None:
            write_result(folder, result)
    except BaseException as error:
        if not isinstance(error, JobFailed | JobCancelled):
            log.exception("rank %d failed", rank)
        Failure.of(error, rank).write(folder)
        sys.exit(1)
    finally:
        leave_ranks()


def distill_rank(launch: Launch, folder: Path) -> DistillResult | None:
    """This rank's part of the job (see `engine.runtime.distributed`); rank 0's result, None elsewhere."""
    resources = Resources.from_settings(launch.settings)
    with resources.database.transaction() as session:
        job = session.scalar(select(Job).where(Job.id == launch.job_id))
    spec = engine_job(JobCreate.model_validate(job.request))
    ranks = join_ranks(resolve_device(spec.training.device, spec.training.devices))
    reporter = DatabaseReporter.for_job(resources, job) if ranks.main else SilentReporter()
    with ExitStack() as stack:
        return distill_here(
            resources,
            job,
            spec,
            files=launch.files,
            file_ids=launch.file_ids,
            out_dir=folder,
            reporter=reporter,
            stack=stack,
            ranks=ranks,
            deadline=launch.deadline,
        )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1])
