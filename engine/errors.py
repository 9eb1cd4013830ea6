"""Failures a user can act on. `code` is stable (the API returns it), `message` says what to do."""


class DistillError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class JobCancelled(Exception):
    """Raised inside the training loop when the job was asked to stop."""
