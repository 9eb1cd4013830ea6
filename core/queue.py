"""The job queue: Celery over the settings' broker. The API and the reaper send `distill.run_job` by
name; the worker registers the task on the same app (`worker.celery_app`)."""

from celery import Celery

from core.config import Settings

RUN_JOB_TASK = "distill.run_job"


class JobQueue:
    def __init__(self, settings: Settings):
        self.app = celery_app(settings)

    def enqueue(self, job_id: str) -> None:
        self.app.send_task(RUN_JOB_TASK, args=[job_id])

    def problem(self) -> str | None:
        """None when the broker accepts a connection, else what went wrong."""
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
        except Exception as exc:  # any transport error means "not ready"
            return f"{type(exc).__name__}: {exc}"
        return None


def celery_app(settings: Settings) -> Celery:
    app = Celery("distill", broker=settings.resolved_broker_url, set_as_current=False)
    app.conf.update(
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.task_queue,
        task_routes={RUN_JOB_TASK: {"queue": settings.task_queue}},
        task_ignore_result=True,
        # A worker that dies leaves its task to the broker to deliver again; a pool child that dies does
        # not: its worker acknowledges it and re-queues or ends the job (`worker.celery_app`).
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_lost_wait=1.0,  # for a dead child's last result, before it counts as lost; jobs have none
        worker_prefetch_multiplier=1,
        # A fresh child process per job: GPU memory is returned to the device when the job ends.
        worker_max_tasks_per_child=1,
        worker_hijack_root_logger=False,
    )
    return app


def broker_transport_options(settings: Settings) -> dict:
    url = settings.resolved_broker_url
    if url.startswith("filesystem://"):
        folders = {name: settings.broker_folder / name for name in ("queue", "processed", "control")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]),
            "control_folder": str(folders["control"]),  # else kombu writes into the working directory
            "store_processed": False,
            # How often a worker lists the queue folder (kombu's default: 1 s, a second's wait per job).
            "polling_interval": 0.1,
        }
    # Redis and SQS redeliver an unacknowledged task after this long; training jobs run for hours.
    return {"visibility_timeout": 12 * 3600, "socket_connect_timeout": 5}
