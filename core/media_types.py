"""The media type a download is served with, by file format: an upload's `format`, or the suffix of an
artifact's name (`pt2` for `student.pt2`)."""

MEDIA_TYPES = {
    "npz": "application/zip",
    "parquet": "application/vnd.apache.parquet",
    "pt2": "application/zip",
    "zip": "application/zip",  # student.hf.zip, student.lora.zip
    "json": "application/json",
    "md": "text/markdown; charset=utf-8",
}
BINARY = "application/octet-stream"  # safetensors, onnx, jsonl and anything else


def media_type(file_format: str) -> str:
    return MEDIA_TYPES.get(file_format, BINARY)
