"""One rank of a job over several devices, as `worker.launcher`'s torchrun starts it:
`python -m worker.rank LAUNCH_FILE`.

Every rank opens the database and the storage from the worker's settings: it reads the job, its
checkpoint and the teacher cache. Rank 0 reports (events, progress, metrics: the job's `DatabaseReporter`),
saves the checkpoints and exports the student into its folder, then writes `result.json` for the task;
the others report nothing. A rank that raises writes `failure.json`, and torchrun stops the others.
"""

import json
import logging
import os
import sys
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import select

from core.config import Settings
from core.job_request import JobCreate, engine_job
from core.models import Job
from core.resources import Resources
from engine.pipeline import DistillResult
from engine.plan.errors import JobCancelled, JobFailed
from engine.runtime.devices import resolve_device
from engine.runtime.distributed import SilentReporter, join_ranks, leave_ranks
from worker.launcher import (
    FAILURE_FILE,
    PARENT_PID,
    RESULT_FILE,
    die_with_parent,
    failure_of,
    job_files,
    rank_folder,
    result_values,
)
from worker.tasks import distill_here, job_reporter

log = logging.getLogger(__name__)


def main(launch_file: str) -> None:
    die_with_parent(int(os.environ[PARENT_PID]))
    rank = int(os.environ["RANK"])
    folder = rank_folder(Path(launch_file).parent, rank)
    folder.mkdir()
    try:
        result = distill_rank(json.loads(Path(launch_file).read_text()), folder)
        if result is not None:
            (folder / RESULT_FILE).write_text(json.dumps(result_values(result)))
    except BaseException as error:
        if not isinstance(error, JobFailed | JobCancelled):
            log.exception("rank %d failed", rank)
        (folder / FAILURE_FILE).write_text(json.dumps(failure_of(error, rank)))
        sys.exit(1)
    finally:
        leave_ranks()


def distill_rank(launch: dict, folder: Path) -> DistillResult | None:
    """This rank's part of the job (see `engine.runtime.distributed`); rank 0's result, None elsewhere."""
    resources = Resources.from_settings(Settings(**launch["settings"]))
    with resources.database.transaction() as session:
        job = session.scalar(select(Job).where(Job.id == launch["job_id"]))
    spec = engine_job(JobCreate.model_validate(job.request))
    ranks = join_ranks(resolve_device(spec.training.device, spec.training.devices))
    reporter = job_reporter(resources, job) if ranks.main else SilentReporter()
    files, file_ids = job_files(launch["files"]), launch["file_ids"]
    with ExitStack() as stack:
        return distill_here(resources, job, spec, files, file_ids, folder, reporter, stack, ranks)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1])
