"""One map of media types serves the downloads of uploaded files (by format) and of artifacts (by suffix)."""

import pytest

from core.media_types import media_type


@pytest.mark.parametrize(
    "file_format, expected",
    [
        ("npz", "application/zip"),
        ("parquet", "application/vnd.apache.parquet"),
        ("pt2", "application/zip"),
        ("zip", "application/zip"),
        ("json", "application/json"),
        ("md", "text/markdown; charset=utf-8"),
        ("safetensors", "application/octet-stream"),
        ("onnx", "application/octet-stream"),
        ("jsonl", "application/octet-stream"),
        ("", "application/octet-stream"),
    ],
)
def test_each_format_has_its_media_type(file_format, expected):
    assert media_type(file_format) == expected
