"""A thread that repeats an action while a block of code runs: a job's heartbeat, its watchdog."""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def repeating(name: str, seconds: float, action: Callable[[], bool | None]) -> Iterator[None]:
    """Run `action` every `seconds` in a thread of its own while the block runs, until it returns True."""
    stop = threading.Event()

    def repeat() -> None:
        while not stop.wait(seconds):
            if action():
                return

    thread = threading.Thread(target=repeat, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
