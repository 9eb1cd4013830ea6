"""Text datasets uploaded as JSON Lines: accepted as `jsonl`, a classifier's or a causal language model's by
the first record's fields, with the shape of their records kept; or a 422 that names the bad line."""

import json

import pytest
from sqlalchemy import select

from core.models import File
from tests.lm_factories import CHATS, PROMPTS, TEXTS
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


def records_of(resources, file_id: str) -> dict | None:
    with resources.database.sessions() as session:
        return session.scalar(select(File.details).where(File.id == file_id))


LANGUAGE_MODEL_RECORDS = {
    "text": (jsonl(*TEXTS), "text"),
    "labeled text": (ACCEPTED["labeled"], "text"),
    "prompts and completions": (b"\n" + jsonl(*PROMPTS), "prompt_completion"),
    "chat messages": (jsonl(*CHATS), "messages"),
}


@pytest.mark.parametrize(
    "content, records", LANGUAGE_MODEL_RECORDS.values(), ids=LANGUAGE_MODEL_RECORDS.keys()
)
def test_the_shape_of_the_records_is_kept_with_the_file(client, resources, content, records):
    body = upload_ok(client, content, "dataset", "train.jsonl")
    assert body["format"] == "jsonl" and body["model"] is None
    assert records_of(resources, body["id"]) == {"records": records}
    assert client.get(f"/v1/files/{body['id']}").json() == body


def test_a_line_too_long_to_check_first_records_nothing(client, resources):
    content = jsonl({"text": "word " * 300_000}, {"prompt": "a", "completion": "b"})
    body = upload_ok(client, content, "dataset", "train.jsonl")
    assert records_of(resources, body["id"]) is None


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
    "prompt without completion": (
        jsonl({"prompt": "2 + 2 ="}),
        ["Line 1 has `prompt` but no `completion`", '{"prompt": "2 + 2 =", "completion": " 4"}'],
    ),
    "empty completion": (jsonl(PROMPTS[0], {"prompt": "a", "completion": " "}), ["Line 2 has an empty"]),
    "a language model's records of two shapes": (
        jsonl(PROMPTS[0], TEXTS[0]),
        ["Line 2 has `text` but line 1 has `prompt` and `completion`", "the same shape"],
    ),
    "a conversation the assistant starts": (
        jsonl({"messages": [{"role": "assistant", "content": "hi"}]}),
        ["Line 1's messages[0] is the assistant's"],
    ),
    "a language model's line not an object": (
        jsonl(PROMPTS[0], [1]),
        ["Line 2 is not a JSON object", '{"messages": [{"role": "user"'],
    ),
}


@pytest.mark.parametrize("content, words", REJECTED.values(), ids=REJECTED.keys())
def test_bad_jsonl_is_422_and_stores_nothing(client, storage_root, content, words):
    newest, objects = newest_id(client, "files"), stored_objects(storage_root)
    error = assert_error(upload(client, content, "dataset", "train.jsonl"), 422, "file", "invalid_file")
    assert "train.jsonl" in error["message"]
    assert all(word in error["message"] for word in words), error["message"]
    assert newest_id(client, "files") == newest
    assert stored_objects(storage_root) == objects


def test_a_language_models_bad_record_is_not_taken_for_another_format(client):
    error = assert_error(upload(client, jsonl({"prompt": "a"}), "dataset", "train.jsonl"), 422, "file")
    assert ".npz" not in error["message"]


def test_a_line_too_long_to_check_ends_the_check(client):
    long_record = json.dumps({"text": "word " * 300_000, "label": 0}).encode()
    content = jsonl(GOOD, long_record, b"not json")  # beyond the long line: left to the engine
    assert upload_ok(client, content, "dataset", "train.jsonl")["format"] == "jsonl"
