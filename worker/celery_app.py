"""The Celery application. Importing this module is cheap (no torch): the API imports it to enqueue."""

from celery import Celery

from service.config import Settings, get_settings

RUN_JOB_TASK = "distill.run_job"


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
        }
    # Redis and SQS redeliver an unacknowledged task after this long; training jobs run for hours.
    return {"visibility_timeout": 12 * 3600, "socket_connect_timeout": 5}


def make_celery(settings: Settings) -> Celery:
    app = Celery("distill", broker=settings.resolved_broker_url, include=["worker.tasks"])
    app.conf.update(
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.task_queue,
        task_routes={RUN_JOB_TASK: {"queue": settings.task_queue}},
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A fresh child process per job: GPU memory is returned to the device when the job ends.
        worker_max_tasks_per_child=1,
        worker_hijack_root_logger=False,
    )
    return app


app = make_celery(get_settings())
