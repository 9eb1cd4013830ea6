"""The worker's Celery app: the job queue's app (`core.queue`) with the task that runs a job, the
connection hygiene of forked children and the reaper thread, all bound to the worker's resources."""

import threading

from celery import Celery
from celery.signals import worker_process_init, worker_ready

from core.queue import RUN_JOB_TASK
from core.resources import Resources
from worker.liveness import run_reaper
from worker.tasks import run_job


def make_celery(resources: Resources) -> Celery:
    app = resources.queue.app

    @app.task(name=RUN_JOB_TASK)
    def run_job_task(job_id: str) -> None:
        run_job(resources, job_id)

    def forget_parent_connections(**_kwargs) -> None:
        """A forked child must not share the parent's database connections."""
        resources.database.forget_connections()

    def start_reaper(**_kwargs) -> None:
        threading.Thread(
            target=run_reaper, args=(resources, threading.Event()), name="reaper", daemon=True
        ).start()

    # Celery keeps weak references to receivers by default: these closures would be collected at once.
    worker_process_init.connect(forget_parent_connections, weak=False)
    worker_ready.connect(start_reaper, weak=False)
    return app
