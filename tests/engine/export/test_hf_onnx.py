"""A transformers student deploys as the other families do: `student.pt2`, `student.onnx` that ONNX Runtime
runs as PyTorch does, and the int8 program and ONNX model."""

import torch

from engine.export.onnx_model import export_onnx, onnx_metrics, quantize_onnx
from engine.export.pt2 import PROGRAM, export_student
from engine.export.quantize import export_int8
from engine.models.registry import build_model
from tests.engine.hf_factories import tiny_inputs, tiny_spec


def test_a_bert_student_exports_to_onnx_and_int8(tmp_path):
    spec = tiny_spec("bert")
    torch.manual_seed(0)
    model = build_model(spec).eval()
    x = tiny_inputs(spec, count=8)
    artifacts = export_student(model, spec, x, tmp_path)
    with torch.no_grad():
        logits = model(x)
    assert torch.allclose(torch.export.load(artifacts[PROGRAM]).module()(x), logits, atol=1e-5)
    path = export_onnx(torch.export.load(artifacts[PROGRAM]), tmp_path)
    measured = onnx_metrics(path, x, None, logits, batch_size=4)  # batches of 4: any batch size runs
    assert measured["agreement"] == 1.0 and measured["max_abs_difference"] < 1e-4
    assert quantize_onnx(path).stat().st_size > 0
    assert export_int8(model, x, tmp_path).stat().st_size > 0
