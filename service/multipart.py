"""A streaming reader of `multipart/form-data` bodies: fed the body chunk by chunk as it arrives, it
hands back its fields whole and its files' bytes as they come, never holding a file in memory.

python-multipart (what Starlette's own form parser runs on) finds the boundaries; the rules above it
are Starlette's, so a body reads here as `Request.form()` read it: the `charset` of the Content-Type
decodes names and values (latin-1 where it cannot), a part whose Content-Disposition has a `filename`
is a file, a text field holds at most 1 MiB, a body at most 1000 fields and 1000 files. A part that
the body ends in before its closing boundary is dropped, and nothing is said about it: the caller
sees that fields are missing.
"""

import codecs
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_FIELD_BYTES = 1024 * 1024
MAX_FIELDS = 1000
MAX_FILES = 1000


class MultipartError(Exception):
    """The body is not a multipart form this reader accepts; the message says why."""


@dataclass(frozen=True)
class Field:
    """A text field, whole."""

    name: str
    value: str


@dataclass(frozen=True)
class FileStart:
    """A file part begins; its bytes follow as `FileData`, then `FileEnd`."""

    name: str
    filename: str


@dataclass(frozen=True)
class FileData:
    data: bytes | memoryview  # a view into a chunk that was fed: no copy


@dataclass(frozen=True)
class FileEnd:
    pass


Event = Field | FileStart | FileData | FileEnd


def form_data_options(content_type: str | None) -> tuple[bytes, str] | None:
    """The boundary and charset of a `multipart/form-data` Content-Type; None for any other type."""
    media_type, params = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        return None
    if b"boundary" not in params:
        raise MultipartError("Missing boundary in multipart.")
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "latin-1"
    return params[b"boundary"], charset


def _decode(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return data.decode("latin-1")


class FormReader:
    """`feed(chunk)` returns the events that chunk completes, in order; `complete` says whether the
    closing boundary has been read. Raises MultipartError on a malformed body."""

    def __init__(self, boundary: bytes, charset: str = "utf-8"):
        self.charset = charset
        self.complete = False
        self._events: list[Event] = []
        self._fields = self._files = 0
        self._header_name = self._header_value = b""
        self._disposition: bytes | None = None
        self._field: tuple[str, bytearray] | None = None  # the text part being read: name, bytes so far
        try:
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._on_part_begin,
                    "on_header_field": self._on_header_field,
                    "on_header_value": self._on_header_value,
                    "on_header_end": self._on_header_end,
                    "on_headers_finished": self._on_headers_finished,
                    "on_part_data": self._on_part_data,
                    "on_part_end": self._on_part_end,
                    "on_end": self._on_end,
                },
            )
        except FormParserError:  # a boundary over 256 bytes
            raise MultipartError("Invalid multipart data.") from None

    def feed(self, chunk: bytes) -> list[Event]:
        try:
            self._parser.write(chunk)
        except FormParserError:
            raise MultipartError("Invalid multipart data.") from None
        events, self._events = self._events, []
        return events

    # python-multipart's callbacks: `data[start:end]` is the callback's piece of a chunk fed (or of the
    # boundary, when what looked like one was data after all)

    def _on_part_begin(self) -> None:
        self._disposition = None

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise MultipartError('The Content-Disposition header field "name" must be provided.')
        name = _decode(options[b"name"], self.charset)
        if b"filename" in options:
            self._files += 1
            if self._files > MAX_FILES:
                raise MultipartError(f"Too many files. Maximum number of files is {MAX_FILES}.")
            self._field = None
            self._events.append(FileStart(name, _decode(options[b"filename"], self.charset)))
        else:
            self._fields += 1
            if self._fields > MAX_FIELDS:
                raise MultipartError(f"Too many fields. Maximum number of fields is {MAX_FIELDS}.")
            self._field = (name, bytearray())

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._field is None:
            self._events.append(FileData(memoryview(data)[start:end]))
            return
        value = self._field[1]
        if len(value) + end - start > MAX_FIELD_BYTES:
            raise MultipartError(f"Part exceeded maximum size of {MAX_FIELD_BYTES // 1024}KB.")
        value += data[start:end]

    def _on_part_end(self) -> None:
        if self._field is None:
            self._events.append(FileEnd())
        else:
            name, value = self._field
            self._events.append(Field(name, _decode(bytes(value), self.charset)))

    def _on_end(self) -> None:
        self.complete = True
