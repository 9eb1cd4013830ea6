"""The rules of a text dataset's records, written once: the upload check and the engine's reader give the
same verdict on a file, in the same words."""

import io
import json

import pytest

from core.config import Settings
from engine.data.text import read_records
from engine.plan.errors import JobFailed
from engine.plan.records import Record, RecordChecks, RecordRejected, parse_record
from service.upload_formats import UploadRejected, detect_format

GOOD = {"text": "fine", "label": 0}


def jsonl(*lines) -> bytes:
    """Dicts and lists are written as JSON, bytes as they are."""
    return b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)


FILES = {
    "labeled": jsonl(GOOD, {"text": "fair", "label": 1}),
    "unlabeled, blank lines, a null label": jsonl({"text": "a"}, b"  ", {"text": "b", "label": None}),
    "byte-order mark": b"\xef\xbb\xbf" + jsonl(GOOD),
    "not utf-8": jsonl(GOOD, b'{"text": "caf\xe9"}'),
    "not json": jsonl(GOOD, b'{"text": "x", '),
    "a label of 5,000 digits": jsonl(GOOD, b'{"text": "x", "label": ' + b"9" * 5000 + b"}"),
    "nested too deeply": jsonl(GOOD, b"[" * 100_000),
    "not an object": jsonl(GOOD, [1, 2]),
    "missing text": jsonl(GOOD, {"label": 0}),
    "text not a string": jsonl(GOOD, {"text": 3, "label": 0}),
    "label names": jsonl({"text": "fine", "label": "positive"}, GOOD),
    "pairs": jsonl({"text": "a", "text_pair": "b"}, {"text": "c", "text_pair": "d"}),
    "a pair missing": jsonl({"text": "a", "text_pair": "b"}, {"text": "c"}),
    "pair not a string": jsonl({"text": "a", "text_pair": 1}),
    "float label": jsonl(GOOD, {"text": "x", "label": 0.5}),
    "boolean label": jsonl(GOOD, {"text": "x", "label": True}),
    "labeled and unlabeled": jsonl(GOOD, GOOD, {"text": "x"}),
    "csv": b"text,label\nhello,0\n",
}


def upload_verdict(content: bytes) -> str | None:
    try:
        detect_format("dataset", io.BytesIO(content), Settings())
    except UploadRejected as rejected:
        return str(rejected)
    return None


def engine_verdict(content: bytes, tmp_path) -> str | None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    try:
        read_records(path)
    except JobFailed as failed:
        assert failed.code == "dataset_invalid"
        return failed.message
    return None


@pytest.mark.parametrize("content", FILES.values(), ids=FILES.keys())
def test_the_upload_check_and_the_engine_give_one_verdict(tmp_path, content):
    engine, upload = engine_verdict(content, tmp_path), upload_verdict(content)
    if engine is None:
        assert upload is None
    else:
        assert upload is not None and upload.startswith(engine), (upload, engine)  # the API adds a hint


def test_no_records_is_refused_by_both(tmp_path):
    assert "has no records" in upload_verdict(b"\n \n")
    assert "data.jsonl has no records" in engine_verdict(b"\n \n", tmp_path)


def test_a_record_has_its_text_and_label():
    assert parse_record(b'{"text": "a", "label": 2, "id": 7}', 1) == Record("a", 2)
    assert parse_record(b'{"text": "a", "label": null}', 1) == Record("a", None)
    assert parse_record(b'{"text": "a", "text_pair": "b", "label": "yes"}', 1) == Record("a", "yes", "b")


REJECTED = {
    "not json": (b"{", "Line 4 is not JSON (Expecting property name enclosed in double quotes at column 2)"),
    "not an object": (b'"a"', 'Line 4 is not a JSON object but "a"'),
    "null": (b"null", "Line 4 is not a JSON object:"),
    "text null": (b'{"text": null}', "Line 4 has no string `text`:"),
    "text a list": (b'{"text": ["a"]}', 'Line 4 has no string `text` (its `text` is ["a"])'),
    "label a list": (b'{"text": "a", "label": [0]}', "Line 4 has `label` [0], not an integer class id"),
    "pair a list": (b'{"text": "a", "text_pair": ["b"]}', 'Line 4 has `text_pair` ["b"]: a pair\'s second'),
}


@pytest.mark.parametrize("line, message", REJECTED.values(), ids=REJECTED.keys())
def test_a_broken_rule_names_the_line_and_the_fix(line, message):
    with pytest.raises(RecordRejected) as caught:
        parse_record(line, 4)
    assert str(caught.value).startswith(message), caught.value


def test_the_first_line_without_a_label_is_named_beside_one_with():
    records = RecordChecks()
    for number, line in enumerate([b'{"text": "a"}', b"", b'{"text": "b", "label": 1}'], start=1):
        records.read(line, number)
    with pytest.raises(RecordRejected, match="Line 1 has no `label` but line 3 has one"):
        records.finish()


def test_a_pair_on_some_lines_only_is_refused():
    records = RecordChecks()
    for number, line in enumerate([b'{"text": "a", "text_pair": "b"}', b'{"text": "c"}'], start=1):
        records.read(line, number)
    with pytest.raises(RecordRejected, match="Line 2 has no `text_pair` but line 1 has one: give every line"):
        records.finish()


def test_a_file_of_blank_lines_has_no_records():
    records = RecordChecks("train.jsonl")
    assert records.read(b" \n", 1) is None
    with pytest.raises(RecordRejected, match="train.jsonl has no records in its first 100 lines"):
        records.finish(lines_read=100)
