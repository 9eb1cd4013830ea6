"""The engine's run of a claimed job in this process, the job's own or one rank's: `run_distillation`
with the job's checkpoint store and teacher cache."""

from contextlib import ExitStack
from pathlib import Path

from core.checkpoint_store import StoredCheckpoint
from core.models import Job
from core.resources import Resources
from core.teacher_cache_store import StoredTeacherCache
from engine.pipeline import Checkpoints, DistillResult, JobFiles, Reporter, run_distillation
from engine.plan.specs import EngineJob
from engine.runtime.distributed import ONE_PROCESS, Ranks


def distill_here(
    resources: Resources,
    job: Job,
    spec: EngineJob,
    *,
    files: JobFiles,
    file_ids: list[str],
    out_dir: Path,
    reporter: Reporter,
    stack: ExitStack,
    ranks: Ranks = ONE_PROCESS,
    deadline: float,
) -> DistillResult | None:
    """The job distilled from `files` (the files `file_ids`) into `out_dir`, stopping past `deadline` (a
    `time.time()`); rank 0's result, None on the other ranks. The teacher cache's fetched folders stay
    until `stack` closes."""
    settings = resources.settings
    store = StoredCheckpoint(resources.storage, job.tenant_id, job.id, resumes=job.request.get("resume_from"))
    checkpoints = Checkpoints(store, settings.checkpoint_seconds)
    cache = StoredTeacherCache(
        resources.database,
        resources.storage,
        max_bytes=settings.teacher_cache_max_bytes,
        tenant_id=job.tenant_id,
        job_pk=job.pk,
        file_ids=file_ids,
        stack=stack,
    )
    return run_distillation(spec, files, out_dir, reporter, checkpoints, cache, ranks, deadline)
