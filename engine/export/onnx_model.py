"""The student as ONNX, for ONNX Runtime and everything else that reads it: `student.onnx`, one file that
takes any batch size, checked against the PyTorch student on the validation set; with `export: ["int8"]`
also `student.int8.onnx`, its weights quantized to int8 by ONNX Runtime, measured like the float one."""

from pathlib import Path

import onnxruntime
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import Tensor

from engine.evaluate import accuracy
from engine.export.latency import latency_ms
from engine.plan.errors import JobFailed

ONNX_MODEL = "student.onnx"
INT8_ONNX_MODEL = "student.int8.onnx"


def export_onnx(program: torch.export.ExportedProgram, out_dir: Path) -> Path:
    """`student.onnx` from the exported program (whose batch dimension is dynamic), weights inside."""
    path = out_dir / ONNX_MODEL
    try:
        torch.onnx.export(program, (), str(path), dynamo=True, external_data=False, verbose=False)
    except Exception as exc:  # an operator the exporter does not know: say so, the other formats stand
        raise JobFailed(
            "export_failed", f"the student could not be exported to ONNX ({type(exc).__name__}: {exc})"
        ) from exc
    return path


def quantize_onnx(path: Path) -> Path:
    """`student.int8.onnx`: ONNX Runtime's dynamic quantization (int8 weights, activations at run time)."""
    int8_path = path.with_name(INT8_ONNX_MODEL)
    quantize_dynamic(path, int8_path, weight_type=QuantType.QInt8)
    return int8_path


class OnnxRunner:
    """The model in an ONNX Runtime session on the CPU, called on a batch of samples like a torch model."""

    def __init__(self, path: Path):
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: Tensor) -> Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: x.numpy()})[0])

    def logits(self, x: Tensor, batch_size: int) -> Tensor:
        return torch.cat([self(x[start : start + batch_size]) for start in range(0, len(x), batch_size)])


def onnx_metrics(
    path: Path, x: Tensor, labels: Tensor | None, student_logits: Tensor, batch_size: int
) -> dict:
    """How the ONNX model agrees with the PyTorch student on the validation set, its accuracy, and its
    latency under ONNX Runtime on the CPU."""
    model = OnnxRunner(path)
    logits = model.logits(x, batch_size)
    return {
        "accuracy": None if labels is None else accuracy(logits, labels),
        "agreement": accuracy(logits, student_logits.argmax(dim=1)),
        "max_abs_difference": float((logits - student_logits).abs().max()),
        "bytes": path.stat().st_size,
        "latency_ms": latency_ms(model, x[:1], torch.device("cpu")),
    }
