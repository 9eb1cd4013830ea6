"""`FileSpanResponse` sends exactly its span of the file, in chunks read ahead or as one zero-copy send
where the ASGI server offers it, closes the file, and stops when the client goes."""

import os

import anyio
import pytest

from service import file_span
from service.file_span import ZERO_COPY, FileSpanResponse

SIZE = 1000
DATA = os.urandom(SIZE)


@pytest.fixture
def file(tmp_path):
    path = tmp_path / "object"
    path.write_bytes(DATA)
    with path.open("rb") as opened:
        yield opened


def respond(file, *, start=0, length=SIZE, extensions=None, receive=None, send_delay=0.0) -> list[dict]:
    response = FileSpanResponse(
        file, start=start, length=length, status_code=206, media_type="application/zip", headers={}
    )
    scope = {"type": "http", "method": "GET", "extensions": extensions or {}}
    sent = []

    async def request_then_wait() -> dict:
        if not sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()

    async def send(message: dict) -> None:
        sent.append(message)
        await anyio.sleep(send_delay)

    anyio.run(response, scope, receive or request_then_wait, send)
    return sent


def body_of(sent: list[dict]) -> bytes:
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    return b"".join(message["body"] for message in sent[1:])


def test_the_span_goes_out_in_chunks_read_ahead(file, monkeypatch):
    monkeypatch.setattr(file_span, "CHUNK_BYTES", 64)
    sent = respond(file, start=100, length=801)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 206
    assert body_of(sent) == DATA[100:901]
    assert len(sent) == 2 + 13  # the start, 801 bytes in chunks of 64, the end
    assert file.closed


def test_a_server_with_zero_copy_sends_the_file_itself(file):
    sent = respond(file, start=10, length=20, extensions={ZERO_COPY: {}})
    assert sent[1] == {"type": ZERO_COPY, "file": file, "offset": 10, "count": 20}
    assert len(sent) == 2
    assert file.closed


def test_the_sending_stops_when_the_client_goes(file, monkeypatch):
    monkeypatch.setattr(file_span, "CHUNK_BYTES", 1)

    async def gone() -> dict:
        await anyio.sleep(0.05)
        return {"type": "http.disconnect"}

    sent = respond(file, receive=gone, send_delay=0.01)
    assert 1 < len(sent) < len(DATA)
    assert file.closed


def test_a_file_shorter_than_announced_fails_the_answer(file):
    with pytest.raises(ExceptionGroup) as raised:
        respond(file, start=900, length=200)
    assert raised.group_contains(OSError, match="ended 100 bytes before the 200 announced")
    assert file.closed
