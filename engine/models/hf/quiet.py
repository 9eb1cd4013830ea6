"""transformers' progress bars ("Loading weights", "Writing model shards") kept out of a job's output: a
worker's log is read line by line, and a bar for every model it loads or saves only buries what matters."""

from collections.abc import Iterator
from contextlib import contextmanager

from transformers.utils import logging


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """transformers (and the Hugging Face hub) draw no progress bar inside; outside, as they were."""
    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()
