"""An ONNX teacher: any architecture, run frozen by ONNX Runtime, called like a torch module.

It returns its graph's first output, the logits. The named values of its graph (any node's output) are
its layers: those a job reads (feature pairs) become extra outputs of the session, and each is handed
to a tap module of its own, so the forward hooks that read a torch teacher's layers read them too.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from google.protobuf.message import DecodeError
from torch import Tensor, nn

from engine.models.transformer import PADDING_ID
from engine.plan.errors import JobFailed
from engine.plan.onnx_file import OnnxFileRejected, check_onnx_file

LISTED_NAMES = 30
INPUT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
# Inputs of text models beside the token ids, made from the ids as the transformers here read them.
ATTENTION_MASK, TOKEN_TYPE_IDS = "attention_mask", "token_type_ids"


class OnnxTeacher(nn.Module):
    def __init__(self, path: Path, layers: Sequence[str] = ()):
        super().__init__()
        model = _loaded(path)
        self.layers = list(dict.fromkeys(layers))
        _add_outputs(model, self.layers)
        self.session = _session(model, path.name)
        self.inputs = self.session.get_inputs()
        self.logits_name = model.graph.output[0].name
        self.runtime_parameters = sum(int(np.prod(tensor.dims)) for tensor in model.graph.initializer)
        self.taps = nn.ModuleList(nn.Identity() for _ in self.layers)
        self._check_inputs(path.name)

    def get_submodule(self, target: str) -> nn.Module:
        """A tapped graph value's tap: forward hooks on it receive the value at every forward pass."""
        if target in self.layers:
            return self.taps[self.layers.index(target)]
        return super().get_submodule(target)

    def forward(self, x: Tensor) -> Tensor:
        outputs = self.session.run([self.logits_name, *self.layers], self._feeds(x.cpu()))
        logits, *tapped = (torch.from_numpy(output).to(x.device) for output in outputs)
        for tap, value in zip(self.taps, tapped, strict=True):
            tap(value)
        return logits

    def _feeds(self, x: Tensor) -> dict[str, np.ndarray]:
        samples = self.inputs[0]
        feeds = {samples.name: x.numpy().astype(INPUT_TYPES[samples.type], copy=False)}
        for extra in self.inputs[1:]:
            made = (x != PADDING_ID) if extra.name == ATTENTION_MASK else torch.zeros_like(x)
            feeds[extra.name] = made.numpy().astype(INPUT_TYPES[extra.type])
        return feeds

    def _check_inputs(self, filename: str) -> None:
        """One input for the samples (plus a text model's mask and token types), with a dynamic batch."""
        names = [i.name for i in self.inputs]
        unknown = [i.name for i in self.inputs[1:] if i.name not in (ATTENTION_MASK, TOKEN_TYPE_IDS)]
        untyped = [f"{i.name} ({i.type})" for i in self.inputs if i.type not in INPUT_TYPES]
        if not names or unknown or untyped:
            typed = f", typed {', '.join(untyped)}" if untyped else ""
            raise JobFailed(
                "teacher_load_failed",
                f"{filename} takes inputs {names}{typed}: an ONNX teacher takes one input, the samples "
                f"(float or integer token ids), and for text models optionally {ATTENTION_MASK} and "
                f"{TOKEN_TYPE_IDS}. Export it with those inputs only.",
            )
        batch = self.inputs[0].shape[0] if self.inputs[0].shape else None
        if isinstance(batch, int):
            raise JobFailed(
                "teacher_load_failed",
                f"{filename}'s input {names[0]} has a fixed batch size of {batch}: export it with a dynamic "
                "batch dimension (torch.onnx.export(..., dynamic_shapes=...) or "
                "dynamic_axes={name: {0: 'batch'}}).",
            )


def _loaded(path: Path) -> onnx.ModelProto:
    try:
        check_onnx_file(path)  # before parsing: external data, truncation, nesting
        return onnx.load_model(path, load_external_data=False)
    except (OnnxFileRejected, DecodeError) as error:
        raise JobFailed(
            "teacher_load_failed", f"{path.name} is not an ONNX model this service runs: {error}"
        ) from None


def _add_outputs(model: onnx.ModelProto, layers: list[str]) -> None:
    """Make the tapped values outputs of the graph, naming the graph's values where one is not in it."""
    values = [output for node in model.graph.node for output in node.output if output]
    unknown = [name for name in layers if name not in values]
    if unknown:
        shown = ", ".join(values[:LISTED_NAMES]) + (
            f" and {len(values) - LISTED_NAMES} more" if len(values) > LISTED_NAMES else ""
        )
        raise JobFailed(
            "unknown_layer",
            f"the ONNX teacher has no value {unknown[0]!r}: its layers are its graph's named values: {shown}",
        )
    outputs = {output.name for output in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in layers if name not in outputs)


def _session(model: onnx.ModelProto, filename: str) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: the validating phase reports what matters
    try:
        return onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # ONNX Runtime raises its own exception types per failure
        raise JobFailed(
            "teacher_load_failed", f"ONNX Runtime cannot run {filename}: {type(error).__name__}: {error}"
        ) from None
