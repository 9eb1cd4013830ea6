"""Encoded bodies kept by each API process, by id, each valid while its object's state is still the one it
was encoded from: the caller reads the state (a few small columns) and gets the bytes, or encodes the
body and keeps it. Reading a job's stored JSON and validating it into the schema's models costs a
hundred times more than that (`service/job_reads.py`). The least recently used go first, past
`max_bytes` in all.
"""

import threading
from collections import OrderedDict

MAX_BYTES = 32 * 1024 * 1024


class KeptBodies:
    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self._bodies: OrderedDict[str, tuple[object, bytes]] = OrderedDict()  # by id: state, body
        self._bytes = 0
        self._lock = threading.Lock()  # the routes' threads share it

    def bodies(self, states: dict[str, object]) -> dict[str, bytes]:
        """The bodies kept for these ids that were encoded in the state given for each."""
        found = {}
        with self._lock:
            for id_, state in states.items():
                kept = self._bodies.get(id_)
                if kept is not None and kept[0] == state:
                    self._bodies.move_to_end(id_)
                    found[id_] = kept[1]
        return found

    def keep(self, id_: str, state: object, body: bytes) -> None:
        with self._lock:
            self._forget(id_)
            self._bodies[id_] = state, body
            self._bytes += len(body)
            while self._bytes > self.max_bytes:
                self._forget(next(iter(self._bodies)))

    def _forget(self, id_: str) -> None:
        kept = self._bodies.pop(id_, None)
        if kept is not None:
            self._bytes -= len(kept[1])
