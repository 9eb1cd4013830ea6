"""Failures a user can act on. `code` is stable (the API returns it), `message` says what to do."""

TIME_LIMIT_EXCEEDED = "time_limit_exceeded"  # the code of a job that ran past its time bound
MAX_LISTED_PROBLEMS = 20


class JobFailed(Exception):
    """`param`: the field of the HTTP job request the error is about, as a dotted path
    (`distillation.features.0.teacher_index`), where there is one."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def time_limit_exceeded(how_far: str) -> JobFailed:
    """A job past its time bound; `how_far`: where it got to and what became of what it trained."""
    return JobFailed(
        TIME_LIMIT_EXCEEDED,
        f"the job ran past its time bound (training.max_seconds, at most DISTILL_MAX_JOB_SECONDS) {how_far}",
    )


class JobCancelled(Exception):
    """Raised inside the training loop when the job was asked to stop."""


def capped_list(problems: list[str]) -> str:
    """The problems for a message, joined, the first MAX_LISTED_PROBLEMS of them and how many more."""
    listed = "; ".join(problems[:MAX_LISTED_PROBLEMS])
    hidden = len(problems) - MAX_LISTED_PROBLEMS
    return f"{listed}; and {hidden} more" if hidden > 0 else listed
