"""The worker's Celery app: the job queue's app (`core.queue`) with the task that runs a job, the
connection hygiene of forked children, the reaper thread and what the worker does when a child dies,
all bound to the worker's resources."""

import re
import threading

from billiard.exceptions import WorkerLostError
from celery import Celery
from celery.signals import task_failure, task_received, worker_process_init, worker_ready

from core.queue import RUN_JOB_TASK
from core.resources import Resources
from worker.liveness import run_reaper, taken_from_queue, training_process_lost
from worker.memory_cgroup import OomKillWatch
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

    # The worker process forks the children that run jobs, and hears when one dies.
    oom_watch = OomKillWatch()

    def note_task(request, **_kwargs) -> None:
        if request.name == RUN_JOB_TASK:
            taken_from_queue(resources.database, request.args[0])
            oom_watch.started(request.id)

    def recover_job(sender, task_id, exception, args, **_kwargs) -> None:
        if sender.name == RUN_JOB_TASK and isinstance(exception, WorkerLostError):
            found = re.search(r"prematurely: (.+) Job:", str(exception))  # "signal 9 (SIGKILL)"
            how = found[1] if found else str(exception)
            training_process_lost(resources, args[0], how, out_of_memory=oom_watch.struck(task_id))

    # Celery keeps weak references to receivers by default: these closures would be collected at once.
    worker_process_init.connect(forget_parent_connections, weak=False)
    worker_ready.connect(start_reaper, weak=False)
    task_received.connect(note_task, weak=False)
    task_failure.connect(recover_job, weak=False)
    return app
