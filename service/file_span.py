"""`FileSpanResponse`: a span of an open file on local disk as a response body, sent the fastest way
the ASGI server offers: its zero-copy send where it has one (`http.response.zerocopysend`; uvicorn has
none), else large chunks read on a worker thread, the next one read while the last one is sent."""

import os
from typing import BinaryIO

import anyio
from anyio.abc import ObjectSendStream
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

# Each send costs uvicorn's HTTP/1.1 the same whatever its size: 4 MiB sends took half the CPU per GiB
# of 256 KiB ones (and 1 MiB ones) in benchmarks/transfer.py's download, at the same speed.
CHUNK_BYTES = 4 * 1024 * 1024
ZERO_COPY = "http.response.zerocopysend"


class FileSpanResponse(Response):
    """`length` bytes of `file` from `start`; closes the file once sent (or the client gone)."""

    def __init__(
        self, file: BinaryIO, *, start: int, length: int, status_code: int, media_type: str, headers: dict
    ):
        super().__init__(status_code=status_code, media_type=media_type, headers=headers)
        self.file, self.start, self.length = file, start, length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self.file:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            if ZERO_COPY in scope.get("extensions", {}):
                await send({"type": ZERO_COPY, "file": self.file, "offset": self.start, "count": self.length})
                return
            async with anyio.create_task_group() as sending:
                sending.start_soon(_cancel_on_disconnect, receive, sending.cancel_scope)
                await self._send_chunks(send)
                sending.cancel_scope.cancel()

    async def _send_chunks(self, send: Send) -> None:
        chunks, to_send = anyio.create_memory_object_stream[bytes](1)
        async with anyio.create_task_group() as reading, to_send:
            reading.start_soon(self._read_chunks, chunks)
            async for chunk in to_send:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _read_chunks(self, chunks: ObjectSendStream[bytes]) -> None:
        descriptor, offset, end = self.file.fileno(), self.start, self.start + self.length
        async with chunks:
            while offset < end:
                chunk = await anyio.to_thread.run_sync(
                    os.pread, descriptor, min(CHUNK_BYTES, end - offset), offset
                )
                if not chunk:
                    raise OSError(f"the file ended {end - offset} bytes before the {self.length} announced")
                offset += len(chunk)
                await chunks.send(chunk)


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """Stops the sending when the client goes (ASGI before 2.4 does not raise on a send to it)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
