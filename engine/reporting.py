"""How the engine tells its caller what is happening. The worker implements it with the database."""

from typing import Protocol


class Reporter(Protocol):
    def event(self, message: str, level: str = "info") -> None: ...  # human-readable events

    def phase(self, phase: str) -> None: ...  # "validating" then "running"

    def progress(self, epoch: int, epochs: int, step: int, total_steps: int) -> None: ...  # every step

    def metrics(self, epoch: int, step: int, values: dict[str, float]) -> None: ...  # once per epoch

    # Training (re)starts after `step` (0: from the beginning): forget the metrics reported after it.
    def rewind(self, step: int) -> None: ...

    def should_stop(self) -> bool: ...  # checked every step
