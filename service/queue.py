"""Hand jobs to the workers and tell whether the broker answers."""

from worker.celery_app import RUN_JOB_TASK, app


def enqueue_job(job_id: str) -> None:
    app.send_task(RUN_JOB_TASK, args=[job_id])


def broker_problem() -> str | None:
    """None when the broker accepts a connection, else what went wrong."""
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
    except Exception as exc:  # any transport error means "not ready"
        return f"{type(exc).__name__}: {exc}"
    return None
