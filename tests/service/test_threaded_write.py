"""A blocking writer fed from the event loop (`service/threaded_write.py`): it gets every chunk in order,
its error reaches the event loop however far ahead the loop was, and an abort stops it with an error it
cleans up after before `abort()` returns."""

import threading

import anyio
import pytest

from service import threaded_write
from service.threaded_write import ThreadedWrite

CHUNK = 256 * 1024


def test_the_writer_gets_every_chunk_in_order_and_its_result_comes_back():
    chunks = [bytes([i % 256]) * CHUNK for i in range(40)]  # 10 MiB: batches of 4 MiB and the rest
    seen = []

    def write(stream):
        assert threading.current_thread() is not threading.main_thread()
        for chunk in stream:
            seen.append(bytes(chunk))
        return len(seen)

    async def main():
        writer = ThreadedWrite(write)
        for chunk in chunks:
            await writer.add(chunk)
        return await writer.finish()

    assert anyio.run(main) == 40
    assert seen == chunks


def test_the_writers_error_reaches_the_loop_while_it_sends_more():
    def write(stream):
        for _ in stream:
            raise OSError("disk full")

    async def main():
        writer = ThreadedWrite(write)
        for _ in range(10 * threaded_write.BATCH_BYTES // CHUNK):  # far more than the writer takes
            await writer.add(bytes(CHUNK))
        await writer.finish()

    with pytest.raises(OSError, match="disk full"):
        anyio.run(main)


def test_abort_stops_the_writer_with_an_error_and_waits_for_it():
    stopped = []

    def write(stream):
        try:
            for _ in stream:
                pass
        except BaseException as exc:
            stopped.append(type(exc).__name__)  # where `Storage.write` deletes its partial file
            raise
        stopped.append("finished")

    async def main():
        writer = ThreadedWrite(write)
        await writer.add(bytes(threaded_write.BATCH_BYTES))
        await writer.abort()
        assert stopped == ["ClosedResourceError"]

    anyio.run(main)
