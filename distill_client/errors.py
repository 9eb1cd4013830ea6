"""What the client raises: the server's refusals with their code, message and field, and what waiting
or downloading ran into."""


class DistillError(Exception):
    """Anything this client raises on purpose."""


class APIError(DistillError):
    """A non-2xx answer: `status` (HTTP), and the error body's `code`, `message` and `param`."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None):
        super().__init__(f"{status} {code}: {message}" + (f" (param: {param})" if param else ""))
        self.status, self.code, self.message, self.param = status, code, message, param


class WaitTimeout(DistillError):
    """The job did not end within the time given; `job` is how it was last seen."""

    def __init__(self, job, seconds: float):
        super().__init__(f"job {job.id} is still {job.status} after {seconds:g} s")
        self.job = job


class DownloadCorrupt(DistillError):
    """The bytes downloaded do not have the sha256 the server lists for them."""
