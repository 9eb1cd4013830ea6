"""A blocking writer fed from the event loop: `write(chunks)` (e.g. `Storage.write`, which consumes an
iterable of chunks) runs on a thread of its own while the event loop receives the next bytes.

The loop hands the chunks over in batches of about BATCH_BYTES, at most DEPTH batches waiting, so the
writer holds a few MiB at most however big the stream is, and the loop and the thread meet once a batch
rather than once a chunk.
"""

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

T = TypeVar("T")
BATCH_BYTES = 4 * 1024 * 1024
DEPTH = 2

Chunk = bytes | memoryview


class ThreadedWrite(Generic[T]):
    """Starts `write(chunks)` on a thread: `await add(chunk)` hands it bytes, `await finish()` returns
    what it returned (or raises what it raised), `await abort()` makes its iterable raise, so that a
    writer that cleans up on an exception (`Storage.write` deletes its partial file) leaves nothing."""

    def __init__(self, write: Callable[[Iterable[Chunk]], T]):
        self._send, self._receive = anyio.create_memory_object_stream[list[Chunk]](DEPTH)
        self._token = anyio.lowlevel.current_token()
        self._stopped = anyio.Event()
        self._batch: list[Chunk] = []
        self._batch_bytes = 0
        self._result: T | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, args=(write,), name="threaded-write", daemon=True).start()

    async def add(self, chunk: Chunk) -> None:
        self._batch.append(chunk)
        self._batch_bytes += len(chunk)
        if self._batch_bytes >= BATCH_BYTES:
            await self._flush()

    async def finish(self) -> T:
        if self._batch:
            await self._flush()
        self._send.close()  # the thread's iterable ends after the batches waiting
        await self._stopped.wait()
        if self._error is not None:
            raise self._error
        return self._result

    async def abort(self) -> None:
        """Stop the writer with an error and wait until it has cleaned up (even when cancelled)."""
        with anyio.CancelScope(shield=True):
            self._receive.close()  # the thread's next receive raises ClosedResourceError
            self._send.close()
            await self._stopped.wait()

    async def _flush(self) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        try:
            await self._send.send(batch)
        except anyio.BrokenResourceError:  # the writer stopped early: raise what stopped it
            await self._stopped.wait()
            raise self._error from None

    # on the thread

    def _run(self, write: Callable[[Iterable[Chunk]], T]) -> None:
        try:
            self._result = write(self._chunks())
        except BaseException as exc:  # handed to the event loop, which raises it
            self._error = exc
        finally:
            try:
                anyio.from_thread.run_sync(self._on_stopped, token=self._token)
            except anyio.RunFinishedError:  # the event loop is gone: nobody waits
                pass

    def _chunks(self) -> Iterator[Chunk]:
        while True:
            try:
                batch = anyio.from_thread.run(self._receive.receive, token=self._token)
            except anyio.EndOfStream:
                return
            yield from batch

    # back on the event loop

    def _on_stopped(self) -> None:
        self._receive.close()  # a batch sent after the writer stopped raises BrokenResourceError
        self._stopped.set()
