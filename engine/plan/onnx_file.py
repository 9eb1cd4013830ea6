"""Check an ONNX model file's structure from its protobuf encoding, in bounded memory, without running it.

A model is one protobuf `ModelProto`. The walk reads every field's tag and length, descends into the
messages that can hold tensors or graphs (graphs, nodes, attributes, functions, sparse tensors) and skips
the bytes of everything else, weights included, with a seek. So a truncated or damaged file is refused
before ONNX Runtime parses it, and so is one whose tensors point at external data: ONNX Runtime would
read those from any path on the machine that loads the model.
"""

from dataclasses import dataclass
from io import SEEK_END, BytesIO
from pathlib import Path
from typing import BinaryIO

# Message kinds, and for each, the fields (by number) that hold messages the walk descends into.
_SUBMESSAGES: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training_info", 25: "function"},
    "training_info": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse_tensor"},
    "node": {5: "attribute"},
    "function": {7: "node", 11: "attribute"},
    "attribute": {
        5: "tensor",
        6: "graph",
        10: "tensor",
        11: "graph",
        22: "sparse_tensor",
        23: "sparse_tensor",
    },
    "sparse_tensor": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION, _EXTERNAL = 13, 14, 1
_MODEL_IR_VERSION, _MODEL_OPSET_IMPORT, _MODEL_GRAPH = 1, 8, 7
_GRAPH_INPUT, _GRAPH_OUTPUT = 11, 12
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
MAX_DEPTH = 32  # messages: a graph in a node's attribute is 3 deeper (If, Loop, Scan); real models nest a few
READ_WHOLE_BELOW = 64 * 1024  # smaller messages are walked in memory, larger ones by seeking in the file


class OnnxFileRejected(Exception):
    """The file is not an ONNX model this service runs; the message says why."""


@dataclass(frozen=True)
class OnnxSummary:
    ir_version: int
    graph_inputs: int
    graph_outputs: int


def check_onnx_file(path: Path) -> OnnxSummary:
    """The model's IR version and its graph's inputs and outputs, once its whole structure has been read."""
    with path.open("rb") as f:
        return check_onnx_stream(f)


def check_onnx_stream(f: BinaryIO) -> OnnxSummary:
    """`check_onnx_file` of a seekable binary stream, read from its start."""
    walk = _Walk()
    end = f.seek(0, SEEK_END)
    f.seek(0)
    walk.message(f, "model", end=end, depth=0)
    if walk.ir_version is None or walk.opsets == 0 or walk.graphs == 0:
        present = {
            "ir_version": walk.ir_version is not None,
            "opset_import": walk.opsets,
            "graph": walk.graphs,
        }
        missing = [name for name, found in present.items() if not found]
        raise OnnxFileRejected(f"Not an ONNX model: it has no {' or '.join(missing)}.")
    if walk.graph_outputs == 0:
        raise OnnxFileRejected("The ONNX model's graph has no outputs; a teacher must output logits.")
    return OnnxSummary(walk.ir_version, walk.graph_inputs, walk.graph_outputs)


class _Walk:
    def __init__(self):
        self.ir_version: int | None = None
        self.opsets = self.graphs = self.graph_inputs = self.graph_outputs = 0

    def message(self, f: BinaryIO, kind: str, end: int, depth: int, top_graph: bool = False) -> None:
        """Read fields of a `kind` message from `f`'s position up to `end`."""
        if depth > MAX_DEPTH:
            raise OnnxFileRejected(f"The ONNX model nests graphs more than {MAX_DEPTH} deep.")
        submessages = _SUBMESSAGES[kind]
        while f.tell() < end:
            field, wire_type = _tag(f, end)
            if wire_type == VARINT:
                value = _varint(f, end)
                self._scalar(kind, field, value)
            elif wire_type in (FIXED64, FIXED32):
                _skip(f, 8 if wire_type == FIXED64 else 4, end)
            elif wire_type == LENGTH_DELIMITED:
                length = _varint(f, end)
                self._counted(kind, field, top_graph)
                if field in submessages:
                    self._submessage(f, submessages[field], length, end, depth, kind == "model")
                else:
                    if kind == "tensor" and field == _TENSOR_EXTERNAL_DATA:
                        raise _external_data()
                    _skip(f, length, end)
            else:
                raise OnnxFileRejected(
                    f"Not an ONNX model (or damaged): field {field} has wire type {wire_type}, "
                    "which ONNX does not use."
                )

    def _submessage(self, f: BinaryIO, kind: str, length: int, end: int, depth: int, top: bool) -> None:
        start = f.tell()
        if start + length > end:
            raise _truncated(start + length, end)
        if length < READ_WHOLE_BELOW:
            self.message(BytesIO(f.read(length)), kind, length, depth + 1, top and kind == "graph")
        else:
            self.message(f, kind, start + length, depth + 1, top and kind == "graph")
            f.seek(start + length)

    def _scalar(self, kind: str, field: int, value: int) -> None:
        if kind == "model" and field == _MODEL_IR_VERSION:
            self.ir_version = value
        elif kind == "tensor" and field == _TENSOR_DATA_LOCATION and value == _EXTERNAL:
            raise _external_data()

    def _counted(self, kind: str, field: int, top_graph: bool) -> None:
        if kind == "model":
            self.opsets += field == _MODEL_OPSET_IMPORT
            self.graphs += field == _MODEL_GRAPH
        elif top_graph:
            self.graph_inputs += field == _GRAPH_INPUT
            self.graph_outputs += field == _GRAPH_OUTPUT


def _tag(f: BinaryIO, end: int) -> tuple[int, int]:
    tag = _varint(f, end)
    field, wire_type = tag >> 3, tag & 7
    if field == 0:
        raise OnnxFileRejected("Not an ONNX model (or damaged): a field has number 0.")
    return field, wire_type


def _varint(f: BinaryIO, end: int) -> int:
    value = 0
    for shift in range(0, 70, 7):
        if f.tell() >= end:
            raise _truncated(f.tell() + 1, end)
        byte = f.read(1)[0]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
    raise OnnxFileRejected("Not an ONNX model (or damaged): a number is encoded in more than 10 bytes.")


def _skip(f: BinaryIO, length: int, end: int) -> None:
    if f.tell() + length > end:
        raise _truncated(f.tell() + length, end)
    f.seek(length, 1)


def _truncated(needed: int, end: int) -> OnnxFileRejected:
    return OnnxFileRejected(
        f"Truncated or damaged ONNX model: a field runs to byte {needed} but its message ends at byte "
        f"{end}. Upload the whole file again."
    )


def _external_data() -> OnnxFileRejected:
    return OnnxFileRejected(
        "The ONNX model keeps tensors in external data files, which this service does not read: save it as "
        "one file (onnx.save_model(model, path, save_as_external_data=False); models over 2 GB cannot be)."
    )
