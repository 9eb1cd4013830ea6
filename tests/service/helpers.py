"""Factories for the API tests: tiny datasets and teachers, uploads, job requests, error checks."""

import io
import json
import struct
import zipfile
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from fastapi.testclient import TestClient
from httpx import Response
from safetensors.torch import save as save_safetensors
from torch import nn

from engine.models.registry import build_model
from engine.plan.specs import MLPSpec

FEATURES = 4
CLASSES = 3


# Datasets


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def dataset_bytes(
    n: int = 16, features: int = FEATURES, classes: int = CLASSES, labels: bool = True
) -> bytes:
    rng = np.random.default_rng(n)
    arrays = {"x": rng.standard_normal((n, features)).astype(np.float32)}
    if labels:
        arrays["y"] = rng.integers(0, classes, n).astype(np.int64)
    return npz_bytes(**arrays)


def parquet_bytes(columns: dict, **options) -> bytes:
    """A Parquet file of `columns` (name -> values, or a pyarrow array); `options`: pq.write_table's."""
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer, **options)
    return buffer.getvalue()


# Model specs and teachers


def mlp_spec(input_shape=(FEATURES,), num_classes: int = CLASSES, hidden_sizes=(8,)) -> dict:
    return {
        "family": "mlp",
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "hidden_sizes": list(hidden_sizes),
    }


def mlp_model(spec: dict) -> nn.Module:
    """The engine's own MLP for `spec`, as a user's trained model would be."""
    return build_model(MLPSpec.model_validate(spec))


def safetensors_teacher(spec: dict | None = None) -> bytes:
    torch.manual_seed(0)
    return save_safetensors(mlp_model(spec or mlp_spec()).state_dict())


def safetensors_raw(header: object, data: bytes = b"", header_len: int | None = None) -> bytes:
    """A hand-made safetensors file: 8-byte little-endian header length, JSON header, data. A `str`
    header is taken as the JSON text itself (one `json.dumps` could not write)."""
    encoded = (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(encoded) if header_len is None else header_len) + encoded + data


@cache
def pt2_teacher() -> bytes:
    """A `torch.export` archive of a tiny MLP (a couple of seconds to make: made once)."""
    model = mlp_model(mlp_spec()).eval()
    program = torch.export.export(model, (torch.zeros(2, FEATURES),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def onnx_teacher(external_data: bool = False) -> bytes:
    """A linear classifier as an ONNX model with a dynamic batch, written with onnx.helper (no exporter:
    milliseconds); with `external_data`, its weight points at a file beside it, as big models do."""
    weight = onnx.numpy_helper.from_array(np.ones((FEATURES, CLASSES), np.float32), "weight")
    if external_data:
        onnx.external_data_helper.set_external_data(weight, location="weight.bin")
        weight.ClearField("raw_data")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "weight"], ["logits"])], "teacher",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", FEATURES])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", CLASSES])],
        [weight],
    )  # fmt: skip
    return onnx.helper.make_model(graph).SerializeToString()


def pickled_teacher(legacy: bool = False) -> bytes:
    """What `torch.save(model.state_dict(), 'teacher.pt')` writes: a pickle (in a zip unless legacy)."""
    buffer = io.BytesIO()
    torch.save(mlp_model(mlp_spec()).state_dict(), buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


TOKENIZER = json.dumps(
    {"version": "1.0", "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1}}}
).encode()
GARBAGE = bytes(range(256)) * 4


# Calls


def upload(
    client: TestClient, content: bytes, purpose: str, filename: str = "upload.bin", **headers
) -> Response:
    return client.post(
        "/v1/files", files={"file": (filename, content)}, data={"purpose": purpose}, headers=headers
    )


def upload_ok(client: TestClient, content: bytes, purpose: str, filename: str = "upload.bin") -> dict:
    response = upload(client, content, purpose, filename)
    assert response.status_code == 201, response.text
    return response.json()


def job_request(teacher_id: str, dataset_id: str, **sections) -> dict:
    """A valid request for a safetensors MLP teacher; keyword arguments replace whole sections."""
    request = {
        "teacher": {"file_id": teacher_id, "architecture": mlp_spec(hidden_sizes=[16])},
        "student": {"architecture": mlp_spec(hidden_sizes=[4])},
        "dataset": {"train_file_id": dataset_id},
    }
    request.update(sections)
    return request


def newest_id(client: TestClient, collection: str) -> str | None:
    """The id at the head of a list (lists are newest first): unchanged means nothing was created."""
    data = client.get(f"/v1/{collection}", params={"limit": 1}).json()["data"]
    return data[0]["id"] if data else None


def stored_objects(storage_root: Path) -> set[Path]:
    return {path for path in storage_root.rglob("*") if path.is_file()} if storage_root.exists() else set()


def assert_error(response: Response, status: int, param: str | None, code: str | None = None) -> dict:
    """The spec's error body: `{"error": {"code", "message", "param"}}`; returns the inner object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "param"}, error
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    assert error["code"] and error["code"] == error["code"].lower() and " " not in error["code"]
    assert isinstance(error["message"], str) and len(error["message"]) > 10, error
    return error
