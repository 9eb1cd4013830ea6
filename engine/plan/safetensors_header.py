"""Read and check a safetensors file's header (its tensors' names, dtypes, shapes and byte spans) without
loading a tensor: the API checks an uploaded teacher's weights with it, and an archived `save_pretrained`
folder's (`engine.plan.hf_archive`).

The header is JSON read from the stream in bounded chunks; a file whose header is not JSON, whose entries
disagree with their shapes, overlap, or point past the file's end is refused.
"""

import json
import struct
from dataclasses import dataclass
from typing import BinaryIO

# Bytes per element, by the dtype names of the safetensors format.
SAFETENSORS_DTYPE_BYTES = (
    dict.fromkeys(["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3"], 1)
    | dict.fromkeys(["I16", "U16", "F16", "BF16"], 2)
    | dict.fromkeys(["I32", "U32", "F32"], 4)
    | dict.fromkeys(["I64", "U64", "F64"], 8)
)
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
READ_CHUNK_BYTES = 1024 * 1024


class SafetensorsRejected(ValueError):
    """The file is no usable safetensors file; the message says why."""


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: tuple[str, ...]  # their names, in the header's order
    parameters: int  # the elements of all of them


def read_safetensors_header(f: BinaryIO, size: int) -> SafetensorsHeader:
    """The header of the safetensors file of `size` bytes that `f` reads from its current position."""
    prefix = read_exactly(f, 8)
    if len(prefix) < 8:
        raise SafetensorsRejected("Not a safetensors file: it is shorter than the 8-byte header length.")
    (header_len,) = struct.unpack("<Q", prefix)
    if header_len > MAX_SAFETENSORS_HEADER or 8 + header_len > size:
        raise SafetensorsRejected(
            f"Not a safetensors file (or truncated): its header claims {header_len} bytes "
            f"but the file has {size}."
        )
    try:
        header = json.loads(read_exactly(f, header_len))
    except (ValueError, RecursionError) as exc:  # JSON syntax, encoding, integers of 4,300+ digits
        raise SafetensorsRejected(f"Not a safetensors file: its header is not JSON ({exc}).") from None
    return _checked(header, data_bytes=size - 8 - header_len)


def read_exactly(f: BinaryIO, n: int) -> bytes:
    """`n` bytes (fewer at the end of the stream), read in chunks of at most `READ_CHUNK_BYTES`."""
    chunks, left = [], n
    while left > 0 and (chunk := f.read(min(left, READ_CHUNK_BYTES))):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _checked(header: object, data_bytes: int) -> SafetensorsHeader:
    if not isinstance(header, dict):
        raise SafetensorsRejected("Not a safetensors file: its header is not a JSON object.")
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        spans.append((*_tensor_span(name, entry, data_bytes), name))
    end_of_previous = 0
    for begin, end, _elements, name in sorted(spans):
        if begin < end_of_previous:
            raise SafetensorsRejected(f"Corrupt safetensors file: tensor {name!r} overlaps another tensor.")
        end_of_previous = end
    if end_of_previous > data_bytes:
        raise SafetensorsRejected(
            f"Truncated safetensors file: the tensors need {end_of_previous} bytes of data, "
            f"the file holds {data_bytes}. Upload the whole file again."
        )
    return SafetensorsHeader(
        tensors=tuple(name for *_, name in spans), parameters=sum(elements for _, _, elements, _ in spans)
    )


def _tensor_span(name: str, entry: object, data_bytes: int) -> tuple[int, int, int]:
    """The tensor's data as (begin, end) offsets, and its elements."""
    try:
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        ok = (
            dtype in SAFETENSORS_DTYPE_BYTES
            and isinstance(shape, list)
            and all(_is_count(d) for d in shape)
            and _is_count(begin)
            and _is_count(end)
            and begin <= end
        )
        elements = _elements(shape, at_most=data_bytes) if ok else None
        ok = elements is not None and end - begin == elements * SAFETENSORS_DTYPE_BYTES[dtype]
    except (TypeError, KeyError, ValueError):
        ok = False
    if not ok:
        raise SafetensorsRejected(
            f"Corrupt safetensors file: the header entry of tensor {name!r} is invalid."
        )
    return begin, end, elements


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _elements(shape: list[int], at_most: int) -> int | None:
    """The elements of a tensor of `shape`, or None past `at_most` (no file of that many bytes holds it):
    multiplying a crafted header's dimensions out in full could take any time."""
    if 0 in shape:
        return 0
    elements = 1
    for dimension in shape:
        elements *= dimension
        if elements > at_most:
            return None
    return elements
