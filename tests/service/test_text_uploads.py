"""Text datasets uploaded as JSON Lines: accepted as `jsonl`, or a 422 that names the bad line."""

import json

import pytest
from sqlalchemy import select

from core.models import File
from tests.service.helpers import assert_error, dataset_bytes, newest_id, stored_objects, upload, upload_ok


def jsonl(*records) -> bytes:
    """Dicts are written as JSON, bytes as they are."""
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)


ACCEPTED = {
    "labeled": jsonl({"text": "a good film", "label": 1}, {"text": "a dull film", "label": 0}),
    "unlabeled": jsonl({"text": "a good film"}, {"text": "a dull film", "label": None}),
    "blank lines, extra keys, no final newline": b'\n{"text": "x", "id": 7}\n\n{"text": "y"}',
    "byte-order mark": b'\xef\xbb\xbf{"text": "x", "label": 0}\n',
    "unicode text": jsonl({"text": "caf\u00e9 \u2615", "label": 2}),
    "label names and pairs": jsonl({"text": "a", "text_pair": "b", "label": "entailment"}),
    "bad line after the first 100": jsonl(*[{"text": "x", "label": 0}] * 100, b"not json"),
}


@pytest.mark.parametrize("content", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_jsonl_dataset_is_accepted(client, content):
    body = upload_ok(client, content, "dataset", "train.jsonl")
    assert body["format"] == "jsonl" and body["purpose"] == "dataset"


def test_a_text_datasets_lines_are_counted_for_its_jobs_bounds(client, resources):
    body = upload_ok(client, ACCEPTED["blank lines, extra keys, no final newline"], "dataset", "train.jsonl")
    with resources.database.sessions() as session:
        assert session.scalar(select(File.samples).where(File.id == body["id"])) == 4  # blank lines too


def test_npz_datasets_are_still_npz(client):
    assert upload_ok(client, dataset_bytes(), "dataset", "train.npz")["format"] == "npz"


GOOD = {"text": "fine", "label": 0}

# (content, words the message must contain)
REJECTED = {
    "csv": (b"text,label\nhello,0\n", ["Line 1 is not JSON", ".npz", "JSON Lines"]),
    "binary": (bytes(range(256)) * 4, ["Line 1", ".npz"]),
    "empty": (b"", ["no records"]),
    "blank lines only": (b"\n  \n\n", ["no records"]),
    "bad json on a later line": (jsonl(GOOD, GOOD, b'{"text": "x", '), ["Line 3 is not JSON"]),
    "not utf-8": (jsonl(GOOD, b'{"text": "caf\xe9"}'), ["Line 2 is not UTF-8"]),
    "array line": (jsonl(GOOD, [1, 2]), ["Line 2 is not a JSON object"]),
    "missing text": (jsonl(GOOD, {"label": 0}), ["Line 2 has no string `text`"]),
    "text not a string": (jsonl(GOOD, {"text": 3, "label": 0}), ["Line 2 has no string `text`"]),
    "float label": (jsonl(GOOD, {"text": "x", "label": 0.5}), ["Line 2", "0.5", "integer"]),
    "boolean label": (jsonl(GOOD, {"text": "x", "label": False}), ["Line 2", "false", "integer"]),
    "labeled and unlabeled": (jsonl(GOOD, {"text": "x"}), ["label every line, or none"]),
    "long line not an object": (b"[" + b"1," * 600_000 + b"1]\n", ["Line 1 is not a JSON object"]),
}


@pytest.mark.parametrize("content, words", REJECTED.values(), ids=REJECTED.keys())
def test_bad_jsonl_is_422_and_stores_nothing(client, storage_root, content, words):
    newest, objects = newest_id(client, "files"), stored_objects(storage_root)
    error = assert_error(upload(client, content, "dataset", "train.jsonl"), 422, "file", "invalid_file")
    assert "train.jsonl" in error["message"]
    assert all(word in error["message"] for word in words), error["message"]
    assert newest_id(client, "files") == newest
    assert stored_objects(storage_root) == objects


def test_a_line_too_long_to_check_ends_the_check(client):
    long_record = json.dumps({"text": "word " * 300_000, "label": 0}).encode()
    content = jsonl(GOOD, long_record, b"not json")  # beyond the long line: left to the engine
    assert upload_ok(client, content, "dataset", "train.jsonl")["format"] == "jsonl"
