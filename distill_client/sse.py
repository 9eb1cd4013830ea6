"""Server-sent events (the WHATWG format) from a stream of lines: one `Message` per blank line."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    event: str  # "message" when the server names none
    data: str
    id: str | None


def messages(lines: Iterable[str]) -> Iterator[Message]:
    event, data, last_id = "", [], None
    for line in lines:
        if not line:
            if data:
                yield Message(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):  # a comment: keep-alive
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            last_id = value
