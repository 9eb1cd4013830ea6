"""Recognise and sanity-check uploaded files from their headers, before any job reads them.

Nothing here unpickles or loads whole arrays: the checks read headers (a JSON Lines file's first lines,
a Parquet file's footer) only, so a bad upload is a 422 at once instead of a failed job later. The engine
checks the contents again when it loads them. They read a seekable stream (`Storage.open`), so a file in a
bucket costs a few small ranged GETs, not a download; only what needs every byte reads it all: a JSON
Lines dataset's line count and a tokenizer's JSON document. An archived `save_pretrained` folder (`hf`) is
read by its directory, its JSON documents and its weights' headers (`engine.plan.hf_archive`), but a
.tar.gz, one compressed stream, is read whole (twice: for its names, then for those documents and headers).
"""

import json
import math
import struct
import zipfile
from io import SEEK_END
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.config import Settings
from engine.plan.archives import (
    ZIP_ERRORS,
    ArchiveRejected,
    check_zip_directory,
    damaged_zip,
    inflates_like_a_bomb,
)
from engine.plan.hf_archive import (
    ArchiveKind,
    HFArchiveRejected,
    HFConfigMissing,
    archive_kind,
    inspect_hf_archive,
)
from engine.plan.lm_records import ONE_OBJECT_PER_LINE as LM_ONE_OBJECT_PER_LINE
from engine.plan.lm_records import SHAPE_NAMES, SHAPE_OF_FIELD, LMRecordChecks, TextRecord, lm_columns
from engine.plan.onnx_file import OnnxFileRejected, check_onnx_stream
from engine.plan.parquet_columns import ParquetRejected, check_columns
from engine.plan.records import ONE_OBJECT_PER_LINE, RecordChecks, RecordRejected, check_record_start
from engine.plan.safetensors_header import SafetensorsRejected, read_safetensors_header

PICKLE_HINT = (
    "Pickled PyTorch checkpoints (.pt/.pth) are never unpickled by the service: save the state dict "
    "as safetensors (`safetensors.torch.save_file(model.state_dict(), 'teacher.safetensors')`) "
    "or export the model with `torch.export.save`."
)

JSONL_CHECKED_LINES = 100
CHUNK_BYTES = 1024 * 1024
MAX_JSONL_LINE_BYTES = 1024 * 1024
DATASET_HINT = (
    "A dataset is JSON Lines text (`text`, optionally `text_pair` and `label`; for a causal language model "
    "`text`, `prompt` and `completion`, or chat `messages`), a Parquet file (a `text` or an `image` column, "
    "optionally `label`; or a language model's columns of the same names) or an .npz file (numpy.savez) "
    "with an array `x` [N, ...] and optionally `y` [N]"
)
# The fields only a causal language model's records have: a JSON Lines file whose first record has one, or a
# Parquet file with such a column, is checked as a language model's dataset, any other as a classifier's.
LM_FIELDS = frozenset(field for field, shape in SHAPE_OF_FIELD.items() if shape is not TextRecord)

PARQUET_MAGIC = b"PAR1"  # a Parquet file's first and last 4 bytes
# The footer (the schema and where each row group's columns are) is all the check reads, and all it holds in
# memory: a few KB per row group, so 16 MiB is thousands of row groups. Hostile sizes are refused unread.
MAX_PARQUET_FOOTER_BYTES = 16 * 1024 * 1024

# Hostile archives (zip directories and bombs: `engine.plan.archives`). numpy.savez writes one `.npy`
# member per array: x, y and perhaps a few more.
MAX_NPZ_MEMBERS = 256
# What a worker inflates into memory when it loads a dataset: the members' declared sizes, which bound
# what `zipfile` will inflate.
MAX_NPZ_UNCOMPRESSED_BYTES = 64 * 1024**3


class UploadRejected(Exception):
    """The upload is not a usable file of its purpose; the message says why and what to do."""


class Detected(NamedTuple):
    format: str
    samples: int | None = None  # a dataset's: an .npz's rows of `x`, a JSON Lines file's lines, Parquet rows
    # An `hf` teacher's: its `HFFolder`. A JSON Lines or Parquet dataset's: `{"records": ...}`, the shape of
    # its records: `text`, `prompt_completion`, `messages` (a language model's) or `image`.
    details: dict[str, Any] | None = None


def detect_format(purpose: str, f: BinaryIO, settings: Settings) -> Detected:
    """The format of the file that the seekable binary stream `f` reads (the server's `settings` bound
    what an archived model may hold)."""
    if purpose == "dataset":
        return _dataset_format(f)
    if purpose == "teacher":
        return _teacher_format(f, settings)
    return Detected(_tokenizer_format(f))


def _size(f: BinaryIO) -> int:
    return f.seek(0, SEEK_END)


def _damaged_zip(exc: Exception) -> UploadRejected:
    return UploadRejected(str(damaged_zip(exc)))


def _teacher_format(f: BinaryIO, settings: Settings) -> Detected:
    kind = archive_kind(f)
    if kind == "zip" and _is_pt2(f):
        return Detected("pt2")
    if kind is not None:
        return _hf_teacher(f, settings, kind)
    try:
        check_safetensors(f)
    except UploadRejected:
        if _is_pickle(f):  # a legacy (non-zip) torch.save file
            raise UploadRejected(PICKLE_HINT) from None
        if not _starts_like_onnx(f):
            raise
        try:
            check_onnx_stream(f)
        except OnnxFileRejected as exc:
            raise UploadRejected(str(exc)) from None
        return Detected("onnx")
    return Detected("safetensors")


def _hf_teacher(f: BinaryIO, settings: Settings, kind: ArchiveKind) -> Detected:
    """A `save_pretrained` folder, archived: what it holds is kept with the file."""
    try:
        folder = inspect_hf_archive(f, settings.hf_archive_limits, settings.hf_model_types)
    except HFConfigMissing as missing:
        if kind != "zip":
            raise UploadRejected(str(missing)) from None
        raise UploadRejected(
            f"This zip archive is neither a torch.export archive (.pt2) nor a transformers model: {missing}. "
            f"A pickled checkpoint? {PICKLE_HINT}"
        ) from None
    except HFArchiveRejected as rejected:
        raise UploadRejected(str(rejected)) from None
    return Detected("hf", details=folder.model_dump(mode="json"))


def _starts_like_onnx(f: BinaryIO) -> bool:
    """ONNX exporters write a model's fields in order, so it starts with field 1 (`ir_version`), a varint."""
    f.seek(0)
    return f.read(1) == b"\x08"


def _is_pickle(f: BinaryIO) -> bool:
    f.seek(0)
    head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # pickle's PROTO opcode


def _check_zip_directory(f: BinaryIO) -> None:
    """Refuse an archive whose central directory is too big to read, before `zipfile` reads it."""
    try:
        check_zip_directory(f)
    except ArchiveRejected as rejected:
        raise UploadRejected(str(rejected)) from None


def _is_pt2(f: BinaryIO) -> bool:
    """Whether the zip archive is a torch.export archive (refused if it is a torch.save pickle)."""
    _check_zip_directory(f)
    try:
        with zipfile.ZipFile(f) as archive:
            names = archive.namelist()
    except ZIP_ERRORS as exc:
        raise _damaged_zip(exc) from None
    if any(name.endswith("/data.pkl") for name in names):
        raise UploadRejected(PICKLE_HINT)
    return any(name.endswith("/archive_format") for name in names) and any("/models/" in n for n in names)


def check_safetensors(f: BinaryIO) -> None:
    size = _size(f)
    f.seek(0)
    try:
        read_safetensors_header(f, size)
    except SafetensorsRejected as rejected:
        raise UploadRejected(str(rejected)) from None


def _dataset_format(f: BinaryIO) -> Detected:
    if zipfile.is_zipfile(f):
        return Detected("npz", _npz_samples(f))
    f.seek(0)
    if f.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC:
        rows, records = _parquet_dataset(f)
        return Detected("parquet", rows, details={"records": records})
    records = _check_jsonl(f)
    return Detected("jsonl", _lines(f), details=None if records is None else {"records": records})


def _parquet_dataset(f: BinaryIO) -> tuple[int, str]:
    """The rows of a Parquet file whose columns make a dataset, and the shape of its records, from its
    footer only."""
    _check_parquet_footer_size(f)
    try:
        parquet = pq.ParquetFile(f)
        rows, schema = parquet.metadata.num_rows, parquet.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UploadRejected(f"The Parquet file is damaged ({exc}): upload it again.") from None
    records = _parquet_records(schema)
    if rows == 0:
        raise UploadRejected("The Parquet file has no rows: a dataset needs at least one.")
    return rows, records


def _parquet_records(schema: pa.Schema) -> str:
    """The shape of the records the columns make: a language model's, or else a classifier's text (which a
    language model reads too) or images."""
    try:
        if LM_FIELDS.intersection(schema.names):
            shape, _columns = lm_columns(schema)
            return SHAPE_NAMES[shape]
        columns = check_columns(schema)
    except (ParquetRejected, RecordRejected) as rejected:
        raise UploadRejected(f"{rejected}.") from None
    return "text" if columns.text else "image"


def _check_parquet_footer_size(f: BinaryIO) -> None:
    """A Parquet file ends with its footer, the footer's length (4 bytes) and the magic bytes."""
    size = _size(f)
    f.seek(max(size - 8, 0))
    end = f.read(8)
    if size < 12 or end[4:] != PARQUET_MAGIC:
        raise UploadRejected(
            "The Parquet file is truncated (it does not end as Parquet files do): upload it again."
        )
    (footer_bytes,) = struct.unpack("<I", end[:4])
    if footer_bytes > size - 12:
        raise UploadRejected(
            f"The Parquet file is damaged: its footer claims {footer_bytes} bytes but the file has {size}."
        )
    if footer_bytes > MAX_PARQUET_FOOTER_BYTES:
        raise UploadRejected(
            f"The Parquet file's footer takes {footer_bytes} bytes, more than this server reads "
            f"({MAX_PARQUET_FOOTER_BYTES} bytes): write it with fewer, larger row groups."
        )


def _npz_samples(f: BinaryIO) -> int:
    _check_zip_directory(f)
    try:
        with zipfile.ZipFile(f) as archive:
            members = archive.infolist()
            _check_npz_members(members, _size(f))
            names = {member.filename for member in members}
            headers = {name: _npy_header(archive, name) for name in ("x.npy", "y.npy") if name in names}
    except ZIP_ERRORS as exc:
        raise _damaged_zip(exc) from None
    if "x.npy" not in headers:
        raise UploadRejected(
            "The .npz has no array `x`: save the inputs as `x` (numpy.savez(path, x=..., y=...))."
        )
    x_shape, x_dtype = headers["x.npy"]
    if len(x_shape) < 2 or x_shape[0] == 0 or x_dtype.kind not in "fiub":
        raise UploadRejected(
            f"`x` must be a numeric array [N, ...] with N > 0; got {x_dtype} {list(x_shape)}."
        )
    if "y.npy" in headers:
        y_shape, y_dtype = headers["y.npy"]
        if len(y_shape) != 1 or y_dtype.kind not in "iu":
            raise UploadRejected(
                f"`y` must be a 1-D integer array of class ids; got {y_dtype} {list(y_shape)}."
            )
        if y_shape[0] != x_shape[0]:
            raise UploadRejected(f"`x` has {x_shape[0]} samples but `y` has {y_shape[0]} labels.")
    return x_shape[0]


def _check_npz_members(members: list[zipfile.ZipInfo], archive_bytes: int) -> None:
    """Only `.npy` arrays, not too many, and no more bytes inflated than a worker can hold (zip bombs)."""
    if len(members) > MAX_NPZ_MEMBERS:
        raise UploadRejected(
            f"The .npz has {len(members)} members; numpy.savez writes one per array, and this server "
            f"reads at most {MAX_NPZ_MEMBERS}."
        )
    for member in members:
        if not member.filename.endswith(".npy") or member.is_dir():  # is_dir fails on an empty name
            raise UploadRejected(
                f"The .npz holds {member.filename!r}, which is not a .npy array (nested archives and other "
                "files are not read): save the arrays with numpy.savez(path, x=..., y=...)."
            )
    inflated = sum(member.file_size for member in members)
    if inflated > MAX_NPZ_UNCOMPRESSED_BYTES:
        raise UploadRejected(
            f"The .npz's arrays take {inflated} bytes uncompressed, more than this server loads "
            f"({MAX_NPZ_UNCOMPRESSED_BYTES} bytes): split the dataset or use a smaller dtype."
        )
    if inflates_like_a_bomb(inflated, archive_bytes):
        raise UploadRejected(
            f"The .npz's {archive_bytes} bytes inflate to {inflated} bytes, far more than real data "
            "compresses (a zip bomb?): save the arrays with numpy.savez, uncompressed."
        )


def _check_jsonl(f: BinaryIO) -> str | None:
    """Checks the first lines, as a language model's records where the first one has a field that only those
    have, else as a classifier's; the shape of the records read (None where a line too long to check came
    before any)."""
    language_model = bool(LM_FIELDS & _fields(_first_record_line(f)))
    records = LMRecordChecks() if language_model else RecordChecks()
    try:
        _check_first_lines(f, records, LM_ONE_OBJECT_PER_LINE if language_model else ONE_OBJECT_PER_LINE)
    except RecordRejected as rejected:
        # Before any record, the file may not be meant as JSON Lines at all (a language model's first line
        # is a JSON object with its fields).
        hint = f" {DATASET_HINT}." if records.records == 0 and not language_model else ""
        raise UploadRejected(f"{rejected}.{hint}") from None
    if language_model:
        return SHAPE_NAMES[records.first[0]]
    return "text" if records.records else None


def _check_first_lines(f: BinaryIO, records: RecordChecks | LMRecordChecks, one_per_line: str) -> None:
    """Checks the first lines only; a line too long to read whole ends the check (the engine reads it)."""
    f.seek(0)
    for number in range(1, JSONL_CHECKED_LINES + 1):
        line = f.readline(MAX_JSONL_LINE_BYTES)
        if len(line) == MAX_JSONL_LINE_BYTES and not line.endswith(b"\n"):
            check_record_start(line, number, one_per_line=one_per_line)
            return
        if not line:
            break
        records.read(line, number)
    records.finish(lines_read=JSONL_CHECKED_LINES)


def _first_record_line(f: BinaryIO) -> bytes:
    """The first line that is not blank, among the lines checked (empty where there is none)."""
    f.seek(0)
    for _number in range(JSONL_CHECKED_LINES):
        line = f.readline(MAX_JSONL_LINE_BYTES)
        if line.strip() or not line:
            return line
    return b""


def _fields(line: bytes) -> set[str]:
    """The fields of the JSON object a line holds; none where it holds none (the checks say why)."""
    try:
        value = json.loads(line.decode("utf-8-sig"))
    except (ValueError, RecursionError):  # not UTF-8, not JSON, cut short
        return set()
    return set(value) if isinstance(value, dict) else set()


def _lines(f: BinaryIO) -> int:
    """Lines of text (blank ones too: the count bounds the records from above), in bounded memory."""
    count, last = 0, b"\n"
    f.seek(0)
    while chunk := f.read(CHUNK_BYTES):
        count, last = count + chunk.count(b"\n"), chunk[-1:]
    return count + (last != b"\n")


def _npy_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    array = name.removesuffix(".npy")
    with archive.open(name) as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else (np.lib.format.read_array_header_2_0)
            )
            shape, _fortran, dtype = read_header(f)
            header_bytes = f.tell()
        except (ValueError, OSError, EOFError) as exc:
            raise UploadRejected(f"Array {array!r} in the .npz is unreadable: {exc}") from None
    if dtype.hasobject:
        raise UploadRejected(
            f"Array {array!r} holds Python objects, which would need unpickling: save numeric arrays only."
        )
    # The shape is what a loader allocates; the member's declared size is what `zipfile` inflates.
    data_bytes = math.prod(shape) * dtype.itemsize
    member_bytes = archive.getinfo(name).file_size - header_bytes
    if data_bytes != member_bytes:
        raise UploadRejected(
            f"Array {array!r} in the .npz declares {dtype} {list(shape)} ({data_bytes} bytes) but its "
            f"member holds {member_bytes} bytes of data: the file is damaged. Save it again with numpy.savez."
        )
    return shape, dtype


def _tokenizer_format(f: BinaryIO) -> str:
    try:
        f.seek(0)
        document = json.load(f)
    except (ValueError, RecursionError) as exc:  # JSON syntax, encoding, integers of 4,300+ digits
        raise UploadRejected(f"A tokenizer must be a Hugging Face `tokenizers` JSON file: {exc}") from None
    if not isinstance(document, dict) or "model" not in document:
        raise UploadRejected(
            "A tokenizer must be a Hugging Face `tokenizers` JSON file with a `model` entry."
        )
    return "json"
