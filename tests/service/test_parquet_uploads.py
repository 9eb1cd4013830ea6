"""Parquet datasets uploaded: accepted as `parquet` with their row count and the shape of their records, read
from the footer alone, or a 422 that names the columns found and what a dataset needs."""

import io
import os
import struct

import pyarrow as pa
import pytest
from sqlalchemy import select

from core.config import Settings
from core.models import File
from service import upload_formats
from service.upload_formats import UploadRejected, detect_format
from tests.lm_factories import CHATS, PROMPTS
from tests.service.helpers import assert_error, newest_id, parquet_bytes, stored_objects, upload, upload_ok

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # `datasets`' Image feature


def columns_of(records: list[dict]) -> dict[str, pa.ChunkedArray]:
    """The records as the `datasets` library writes them: a list of dicts is a list of structs."""
    table = pa.Table.from_pylist(records)
    return dict(zip(table.column_names, table.columns, strict=True))


# (columns, rows, the shape of the records)
ACCEPTED = {
    "text and label names": ({"text": ["a good film", "a dull film"], "label": ["pos", "neg"]}, 2, "text"),
    "pairs, class ids, other columns": (
        {
            "text": ["a"] * 3,
            "text_pair": ["b"] * 3,
            "label": pa.array([0, 1, 0], pa.int8()),
            "idx": [1, 2, 3],
        },
        3,
        "text",
    ),
    "unlabeled text": ({"text": ["a"] * 5}, 5, "text"),
    "datasets' image struct": (
        {"image": pa.array([{"bytes": b"png", "path": "a.png"}], IMAGE_TYPE)},
        1,
        "image",
    ),
    "image bytes and label": (
        {"image": pa.array([b"png", b"jpg"], pa.binary()), "label": [3, 4]},
        2,
        "image",
    ),
    "prompts and completions": (columns_of(PROMPTS) | {"source": ["x"] * 3}, 3, "prompt_completion"),
    "chat messages": (columns_of(CHATS), 2, "messages"),
}


@pytest.mark.parametrize("columns, rows, records", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_a_parquet_dataset_is_accepted_with_its_rows(client, resources, columns, rows, records):
    body = upload_ok(client, parquet_bytes(columns, row_group_size=2), "dataset", "train.parquet")
    assert body["format"] == "parquet" and body["purpose"] == "dataset" and body["model"] is None
    with resources.database.sessions() as session:
        row = session.execute(select(File.samples, File.details).where(File.id == body["id"])).one()
    assert (row.samples, row.details) == (rows, {"records": records})
    assert client.get(f"/v1/files/{body['id']}").json() == body


TEXT = {"text": ["a", "b"]}

# (content, words the message must contain)
REJECTED = {
    "no text or image column": (
        parquet_bytes({"sentence": ["a"], "score": [0.5]}),
        ["columns are `sentence`, `score`", "needs a `text` column", "or an `image` column", "`label`"],
    ),
    "text not strings": (parquet_bytes({"text": [1, 2]}), ["Column `text` holds int64", "strings"]),
    "label floats": (parquet_bytes(TEXT | {"label": [0.5, 1.0]}), ["Column `label` holds double"]),
    "image not bytes": (parquet_bytes({"image": ["a.png"]}), ["Column `image` holds string"]),
    "no rows": (parquet_bytes({"text": pa.array([], pa.string())}), ["no rows"]),
    "prompt without completion": (
        parquet_bytes({"prompt": ["2 + 2 ="]}),
        ["columns are `prompt`", "`prompt` and `completion` columns (strings)"],
    ),
    "text and prompts": (
        parquet_bytes(TEXT | {"prompt": ["a", "b"], "completion": ["c", "d"]}),
        ["columns of more than one shape, `text` and `prompt` and `completion`: keep one"],
    ),
    "messages not a list of structs": (
        parquet_bytes({"messages": ["hello"]}),
        ["Column `messages` holds string", "lists of {role, content} structs"],
    ),
    "truncated": (parquet_bytes(TEXT)[:-5], ["truncated"]),
    "footer length beyond the file": (
        parquet_bytes(TEXT)[:-8] + struct.pack("<I", 10**9) + b"PAR1",
        ["footer claims 1000000000 bytes"],
    ),
    "footer damaged": (
        (lambda data: data[:-40] + b"\xff" * 32 + data[-8:])(parquet_bytes(TEXT)),
        ["The Parquet file is damaged"],
    ),
}


@pytest.mark.parametrize("content, words", REJECTED.values(), ids=REJECTED.keys())
def test_a_bad_parquet_dataset_is_422_and_stores_nothing(client, storage_root, content, words):
    newest, objects = newest_id(client, "files"), stored_objects(storage_root)
    error = assert_error(upload(client, content, "dataset", "train.parquet"), 422, "file", "invalid_file")
    assert "train.parquet" in error["message"]
    assert all(word in error["message"] for word in words), error["message"]
    assert newest_id(client, "files") == newest
    assert stored_objects(storage_root) == objects


class CountingReader(io.BytesIO):
    """Counts the bytes read."""

    read_bytes = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        return data


def test_only_the_files_end_is_read():
    rows = 2_000
    content = parquet_bytes({"text": [os.urandom(500).hex() for _ in range(rows)]}, compression="none")
    stream = CountingReader(content)
    assert detect_format("dataset", stream, Settings()).samples == rows
    # The zip check and pyarrow each read the last 64 KiB or so, and the footer is within them.
    assert len(content) > 2_000_000 and stream.read_bytes < 200_000


def test_a_footer_too_large_to_read_is_refused_unread(monkeypatch):
    monkeypatch.setattr(upload_formats, "MAX_PARQUET_FOOTER_BYTES", 1_000)
    content = b"PAR1" + b"\0" * 2_000 + struct.pack("<I", 1_001) + b"PAR1"
    with pytest.raises(UploadRejected, match="footer takes 1001 bytes, more than this server reads"):
        detect_format("dataset", io.BytesIO(content), Settings())
