"""An int8 student: weight-only, symmetric, per-output-channel quantization in plain torch ops.

Every Linear, Conv2d and Embedding keeps its weight as int8 with one float scale per output channel
(per row for embeddings) and dequantizes it in forward; activations, biases and normalisation stay
float. Weights take a quarter of the space and the exported program is ordinary aten ops, so it
loads with `torch.export.load(path).module()` on any backend. Compute stays float, so it is no faster.

Why not torch's own int8: torch 2.13 no longer ships PT2E (`torch.ao.quantization.quantize_pt2e`
moved to torchao), and `quantize_dynamic` modules hold packed-weight script objects torch.export
cannot trace.
"""

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.export.pt2 import export_program

INT8_PROGRAM = "student.int8.pt2"

# Symmetric range: -128 is left out so that w and -w quantize to opposite values.
_INT8_LIMIT = 127


def quantize_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    """int8 values and a float scale per slice along dim 0: `weight ~= values * scale`."""
    largest = weight.detach().abs().amax(dim=tuple(range(1, weight.dim())))
    scale = largest.float().clamp(min=torch.finfo(torch.float32).tiny) / _INT8_LIMIT
    values = torch.round(weight.detach() / _per_slice(scale, weight.dim()))
    return values.clamp(-_INT8_LIMIT, _INT8_LIMIT).to(torch.int8), scale


def _per_slice(scale: Tensor, dims: int) -> Tensor:
    return scale.reshape(-1, *[1] * (dims - 1))


class Int8Weight(nn.Module):
    """Holds an int8 weight; `weight` reads as the dequantized float tensor.

    `weight` and `bias` keep the names of the float module, so code that reads them directly (the
    transformer adds `embeddings.positions.weight` without a lookup) works unchanged.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__()
        values, scale = quantize_weight(weight)
        self.register_buffer("weight_int8", values)
        self.register_buffer("weight_scale", scale.to(weight.dtype))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @property
    def weight(self) -> Tensor:
        return self.weight_int8.to(self.weight_scale.dtype) * _per_slice(
            self.weight_scale, self.weight_int8.dim()
        )


class Int8Linear(Int8Weight):
    def __init__(self, linear: nn.Linear):
        super().__init__(linear.weight, linear.bias)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class Int8Conv2d(Int8Weight):
    def __init__(self, conv: nn.Conv2d):
        super().__init__(conv.weight, conv.bias)
        self.stride, self.padding, self.dilation, self.groups = (
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Int8Embedding(Int8Weight):
    """One scale per row (token); a lookup dequantizes only the rows it reads."""

    def __init__(self, embedding: nn.Embedding):
        super().__init__(embedding.weight, None)

    def forward(self, ids: Tensor) -> Tensor:
        rows = F.embedding(ids, self.weight_int8).to(self.weight_scale.dtype)
        return rows * F.embedding(ids, self.weight_scale.unsqueeze(1))


def _int8_replacement(module: nn.Module) -> nn.Module | None:
    """The int8 version of a module, or None to keep it float."""
    if isinstance(module, nn.Linear):
        return Int8Linear(module)
    # Other padding modes pad inside Conv2d's own forward; they are rare enough to stay float.
    if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros":
        return Int8Conv2d(module)
    # max_norm renormalises the float table in place on lookup, which an int8 table cannot do.
    if isinstance(module, nn.Embedding) and module.max_norm is None:
        return Int8Embedding(module)
    return None


def quantize_int8(model: nn.Module) -> nn.Module:
    """An eval-mode int8 copy of `model` on the same device, for inference only; `model` is untouched."""
    quantized = copy.deepcopy(model).eval()
    _replace_children(quantized)
    return quantized


def _replace_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        replacement = _int8_replacement(child)
        if replacement is None:
            _replace_children(child)
        else:
            setattr(module, name, replacement)


def export_int8(model: nn.Module, example_input: Tensor, out_dir: Path) -> Path:
    """Write `student.int8.pt2`, a program of the int8 model that accepts any batch size >= 1."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / INT8_PROGRAM
    quantized = quantize_int8(model).to("cpu")
    torch.export.save(export_program(quantized, example_input.detach().to("cpu")), path)
    return path
