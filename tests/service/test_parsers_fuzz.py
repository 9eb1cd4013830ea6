"""Every parser of the API that reads a user's bytes is total: whatever the bytes, an upload's format check
answers a format or `UploadRejected` (a 422), and a download's `Range` and `If-None-Match` an answer the
spec allows, never a 500. Hypothesis feeds each random bytes and damaged real files, for a bounded,
repeatable number of cases (derandomized)."""

import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Settings
from service.downloads import _etag_matches, parse_range
from service.upload_formats import UploadRejected, detect_format
from tests.service.helpers import (
    TOKENIZER,
    dataset_bytes,
    onnx_teacher,
    parquet_bytes,
    safetensors_raw,
    safetensors_teacher,
    upload_ok,
    zip_bytes,
)

FUZZ = settings(
    max_examples=250, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
FORMATS = {
    "teacher": {"safetensors", "pt2", "onnx", "hf"},
    "dataset": {"npz", "jsonl", "parquet"},
    "tokenizer": {"json"},
}
SETTINGS = Settings()
SEEDS = {
    "teacher": [safetensors_teacher(), onnx_teacher()],
    "dataset": [
        dataset_bytes(),
        b'{"text": "a cat", "label": 0}\n{"text": "a dog", "label": 1}\n',
        parquet_bytes({"text": ["a cat", "a dog"], "label": ["cat", "dog"]}),
    ],
    "tokenizer": [TOKENIZER],
}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


# JSON text with one number of more digits than CPython converts (4,300): a ValueError of its own.
JSON_TEXT = st.one_of(
    JSON.map(json.dumps),
    st.builds(
        lambda text, digits: text.replace("0", "9" * digits, 1), JSON.map(json.dumps), st.integers(4301, 5000)
    ),
)


def damaged(seed: bytes) -> st.SearchStrategy[bytes]:
    """A real file with some bytes overwritten, cut short, or with bytes appended."""
    edits = st.lists(st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255)), max_size=8)
    return st.builds(
        lambda changes, keep, tail: _edited(seed, changes)[:keep] + tail,
        edits,
        st.integers(0, len(seed)),
        st.binary(max_size=16),
    )


def _edited(seed: bytes, changes: list[tuple[int, int]]) -> bytes:
    data = bytearray(seed)
    for position, value in changes:
        data[position] = value
    return bytes(data)


def uploads(purpose: str) -> st.SearchStrategy[bytes]:
    structured = {
        "teacher": st.builds(lambda header: safetensors_raw(header, bytes(16)), JSON_TEXT),
        "dataset": st.builds(
            zip_bytes, st.dictionaries(st.sampled_from(["x.npy", "y.npy", "z.txt"]), st.binary(max_size=200))
        )
        | st.lists(JSON_TEXT, min_size=1, max_size=5).map(lambda lines: "\n".join(lines).encode()),
        "tokenizer": JSON_TEXT.map(str.encode),
    }[purpose]
    return st.one_of(st.binary(max_size=2048), structured, *(damaged(seed) for seed in SEEDS[purpose]))


def check_total(purpose: str, content: bytes) -> None:
    try:
        assert detect_format(purpose, io.BytesIO(content), SETTINGS).format in FORMATS[purpose]
    except UploadRejected as rejected:
        assert str(rejected)


@FUZZ
@given(content=uploads("teacher"))
def test_teacher_format_check_is_total(content):
    check_total("teacher", content)


@FUZZ
@given(content=uploads("dataset"))
def test_dataset_format_check_is_total(content):
    check_total("dataset", content)


@FUZZ
@given(content=uploads("tokenizer"))
def test_tokenizer_format_check_is_total(content):
    check_total("tokenizer", content)


HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
RANGES = HEADER_TEXT | st.builds(
    lambda first, last: f"bytes={first}-{last}",
    st.one_of(st.just(""), st.integers(0, 10**30).map(str)),
    st.one_of(st.just(""), st.integers(0, 10**30).map(str)),
)


@FUZZ
@given(header=RANGES, size=st.integers(0, 10**12))
def test_range_parsing_is_total(header, size):
    span = parse_range(header, size)
    assert span is None or 0 <= span[0] <= span[1] < size


@FUZZ
@given(header=HEADER_TEXT)
def test_if_none_match_parsing_is_total(header):
    assert _etag_matches(header, '"abc"') in (True, False)


@pytest.fixture(scope="module")
def stored_file(client) -> dict:
    return upload_ok(client, dataset_bytes(), "dataset", "fuzz.npz")


@settings(FUZZ, max_examples=60)
@given(range_header=RANGES, if_range=HEADER_TEXT, if_none_match=HEADER_TEXT)
def test_download_headers_are_answered(client, stored_file, range_header, if_range, if_none_match):
    headers = {"Range": range_header, "If-Range": if_range, "If-None-Match": if_none_match}
    response = client.get(f"/v1/files/{stored_file['id']}/content", headers=headers)
    assert response.status_code in (200, 206, 304, 416), response.text
