"""The streaming multipart reader (`service/multipart.py`) reads a body however it is cut into chunks, and
reads it as Starlette's form parser (what FastAPI parsed uploads with before) did: the same fields and
files, or the same error. A table of bodies, each cut at every place; hypothesis for the rest."""

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.multipart import (
    Field,
    FileData,
    FileEnd,
    FileStart,
    FormReader,
    MultipartError,
    form_data_options,
)

FUZZ = settings(
    max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def body_of(boundary: str, parts: list[tuple[str, str | None, bytes]], end: bytes = b"--\r\n") -> bytes:
    """`parts`: (name, filename or None, bytes), each name and filename quoted as browsers and curl do."""
    body = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{_quoted(name)}"'
        if filename is not None:
            disposition += f'; filename="{_quoted(filename)}"'
        headers = f"Content-Disposition: {disposition}\r\n"
        if filename is not None:
            headers += "Content-Type: application/octet-stream\r\n"
        body += f"--{boundary}\r\n{headers}\r\n".encode() + value + b"\r\n"
    return body + f"--{boundary}".encode() + end


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def chunks_of(body: bytes, cuts) -> list[bytes]:
    edges = [0, *sorted(cut for cut in cuts if 0 < cut < len(body)), len(body)]
    return [body[start:stop] for start, stop in zip(edges, edges[1:], strict=False)]


def read(content_type: str, chunks: list[bytes]) -> list[tuple]:
    """What the reader makes of the body: ("field", name, value) and ("file", name, filename, bytes) for
    each complete part, in order, or ("error", message)."""
    try:
        reader = FormReader(*form_data_options(content_type))
        items, file = [], None
        for chunk in chunks:
            for event in reader.feed(chunk):
                if isinstance(event, Field):
                    items.append(("field", event.name, event.value))
                elif isinstance(event, FileStart):
                    file = ["file", event.name, event.filename, b""]
                elif isinstance(event, FileData):
                    file[3] += bytes(event.data)
                elif isinstance(event, FileEnd):
                    items.append(tuple(file))
        return items
    except MultipartError as exc:
        return [("error", str(exc))]


def starlette_read(content_type: str, chunks: list[bytes]) -> list[tuple]:
    """The same, from Starlette's MultiPartParser."""

    async def stream():
        for chunk in chunks:
            yield chunk

    async def parse():
        try:
            form = await MultiPartParser(Headers({"content-type": content_type}), stream()).parse()
        except MultiPartException as exc:
            return [("error", exc.message)]
        items = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                items.append(("file", name, value.filename, await value.read()))
            else:
                items.append(("field", name, value))
        return items

    return anyio.run(parse)


PARTS = [("purpose", None, b"dataset"), ("file", "train.npz", b"PK\x03\x04 some bytes\r\n")]

# name: (Content-Type, body, what the reader reads)
BODIES = {
    "purpose first": (
        "multipart/form-data; boundary=b0undary",
        body_of("b0undary", PARTS),
        [("field", "purpose", "dataset"), ("file", "file", "train.npz", b"PK\x03\x04 some bytes\r\n")],
    ),
    "file first": (
        "multipart/form-data; boundary=b0undary",
        body_of("b0undary", PARTS[::-1]),
        [("file", "file", "train.npz", b"PK\x03\x04 some bytes\r\n"), ("field", "purpose", "dataset")],
    ),
    "quoted boundary with a space and a colon": (
        'multipart/form-data; boundary="a b:c"',
        body_of("a b:c", PARTS),
        [("field", "purpose", "dataset"), ("file", "file", "train.npz", b"PK\x03\x04 some bytes\r\n")],
    ),
    "boundary before other parameters": (
        "multipart/form-data; boundary=----x; charset=utf-8",
        body_of("----x", PARTS),
        [("field", "purpose", "dataset"), ("file", "file", "train.npz", b"PK\x03\x04 some bytes\r\n")],
    ),
    "file data that almost holds the delimiter": (
        "multipart/form-data; boundary=b0undary",
        body_of("b0undary", [("file", "x", b"\r\n--b0undar\r\n--b0undaryX\r\r\n-"), ("purpose", None, b"d")]),
        [("file", "file", "x", b"\r\n--b0undar\r\n--b0undaryX\r\r\n-"), ("field", "purpose", "d")],
    ),
    "filename with odd characters": (
        "multipart/form-data; boundary=b0undary",
        body_of("b0undary", [("file", 'we;ird = "name" données\u202e.json', b"{}")]),
        [("file", "file", 'we;ird = "name" données\u202e.json', b"{}")],
    ),
    "empty filename and empty file": (
        "multipart/form-data; boundary=b0undary",
        body_of("b0undary", [("file", "", b"")]),
        [("file", "file", "", b"")],
    ),
    "epilogue and no final CRLF": (
        "multipart/form-data; boundary=b0undary",
        body_of("b0undary", PARTS, end=b"--"),
        [("field", "purpose", "dataset"), ("file", "file", "train.npz", b"PK\x03\x04 some bytes\r\n")],
    ),
    "cut inside the file": (
        "multipart/form-data; boundary=b0undary",
        body_of("b0undary", PARTS)[:-20],
        [("field", "purpose", "dataset")],
    ),
    "a part without a name": (
        "multipart/form-data; boundary=b0undary",
        b'--b0undary\r\nContent-Disposition: form-data; filename="x"\r\n\r\nabc\r\n--b0undary--\r\n',
        [("error", 'The Content-Disposition header field "name" must be provided.')],
    ),
    "another boundary": (
        "multipart/form-data; boundary=other",
        body_of("b0undary", PARTS),
        [("error", "Invalid multipart data.")],
    ),
    "a header line without a colon": (
        "multipart/form-data; boundary=b0undary",
        b"--b0undary\r\nContent-Disposition form-data\r\n\r\nabc\r\n--b0undary--\r\n",
        [("error", "Invalid multipart data.")],
    ),
}


@pytest.mark.parametrize("content_type, body, expected", BODIES.values(), ids=BODIES.keys())
def test_a_body_cut_anywhere_reads_the_same(content_type, body, expected):
    """Whole, byte by byte, and cut in two at every place: the delimiter split between two chunks, a CR at
    the end of one and its LF at the start of the next."""
    assert read(content_type, [body]) == expected
    assert read(content_type, [body[i : i + 1] for i in range(len(body))]) == expected
    for cut in range(1, len(body)):
        assert read(content_type, chunks_of(body, [cut])) == expected, cut
    assert starlette_read(content_type, [body]) == expected


def test_file_data_is_not_copied():
    """A file's bytes come out as views into the chunks fed, not copies."""
    chunk = b"y" * 1000
    reader = FormReader(b"b")
    reader.feed(b'--b\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n')
    (event,) = reader.feed(chunk)
    assert isinstance(event.data, memoryview) and event.data.obj is chunk


def test_limits_of_fields():
    long_field = body_of("b", [("note", None, b"n" * (1024 * 1024 + 1))])
    assert read("multipart/form-data; boundary=b", [long_field]) == [
        ("error", "Part exceeded maximum size of 1024KB.")
    ]
    many = body_of("b", [(f"f{i}", None, b"x") for i in range(1001)])
    assert read("multipart/form-data; boundary=b", [many]) == [
        ("error", "Too many fields. Maximum number of fields is 1000.")
    ]
    big_file = body_of("b", [("file", "f", b"n" * (2 * 1024 * 1024))])
    assert read("multipart/form-data; boundary=b", [big_file])[0][3] == b"n" * (2 * 1024 * 1024)


@pytest.mark.parametrize(
    "content_type, options",
    [
        ("multipart/form-data; boundary=abc", (b"abc", "utf-8")),
        ('Multipart/Form-Data; boundary="a;b"; charset=latin-1', (b"a;b", "iso8859-1")),
        ("multipart/form-data; boundary=abc; charset=nonsense", (b"abc", "latin-1")),
        ("multipart/mixed; boundary=abc", None),
        ("application/json", None),
        (None, None),
    ],
)
def test_form_data_options(content_type, options):
    assert form_data_options(content_type) == options


def test_a_form_without_a_boundary():
    with pytest.raises(MultipartError, match="Missing boundary"):
        form_data_options("multipart/form-data")


# Hypothesis: bodies of random parts, some damaged, cut at random places, read as Starlette reads them

BOUNDARY_CHARS = "abcXYZ0123456789'()+_,-./:=? "


@st.composite
def bodies(draw) -> tuple[str, list[bytes]]:
    boundary = draw(st.text(BOUNDARY_CHARS, min_size=1, max_size=12).filter(lambda b: not b.endswith(" ")))
    delimiter = f"\r\n--{boundary}".encode()
    tricky = st.sampled_from(
        [b"\r", b"\n", b"\r\n", b"-", b"--", delimiter, delimiter[: len(delimiter) // 2]]
    )
    value = st.lists(st.binary(max_size=12) | tricky, max_size=5).map(b"".join)
    name = st.sampled_from(["file", "purpose", "note", "naïve", "a;b", 'q"uote'])
    filename = st.none() | st.sampled_from(["train.npz", "", "we;ird name.json", "C:\\dir\\f.bin", "données"])
    parts = draw(st.lists(st.tuples(name, filename, value), max_size=4))
    body = body_of(boundary, parts, end=draw(st.sampled_from([b"--\r\n", b"--", b"--\r\nepilogue"])))
    damage = draw(st.sampled_from(["none", "cut", "byte"]))
    if damage == "cut":
        body = body[: draw(st.integers(0, len(body)))]
    elif damage == "byte" and body:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1 :]
    quoted = draw(st.booleans()) or any(c in boundary for c in " (),/:=?")
    content_type = (
        f'multipart/form-data; boundary="{boundary}"'
        if quoted
        else f"multipart/form-data; boundary={boundary}"
    )
    cuts = draw(st.lists(st.integers(0, len(body)), max_size=4))
    return content_type, chunks_of(body, cuts)


@FUZZ
@given(bodies())
def test_random_bodies_read_as_starlette_reads_them(body):
    content_type, chunks = body
    assert read(content_type, chunks) == starlette_read(content_type, chunks)
