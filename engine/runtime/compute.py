"""How a job's training steps compute on its device: in which precision (autocast, and a gradient scaler for
float16), with TF32 matmuls and channels-last convolutions on a GPU, and with `torch.compile` when asked.

Evaluation (validation scores, the teachers' validation outputs, latencies, exports) stays in float32.
"""

import contextlib
import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from engine.plan.errors import JobFailed
from engine.plan.specs import ArchitectureSpec, TrainingConfig
from engine.reporting import Reporter

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    """The training step's precision on a device: "fp32", "bf16" or "fp16" (autocast)."""

    name: str
    device: torch.device

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.name])

    def scaler(self) -> torch.amp.GradScaler | None:
        """float16's gradient scaler, which keeps small gradients from rounding to zero."""
        return torch.amp.GradScaler(self.device.type) if self.name == "fp16" else None


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """`auto`: bfloat16 on a GPU that has it, else float32; the CPU stays in float32 unless asked."""
    bf16_gpu = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if requested == "auto":
        return Precision("bf16" if bf16_gpu else "fp32", device)
    if requested == "bf16" and device.type == "cuda" and not bf16_gpu:
        raise JobFailed(
            "precision_unsupported",
            f"training.precision is bf16 but {torch.cuda.get_device_name(device)} has no bfloat16: use fp16 "
            "(with a gradient scaler) or auto",
        )
    return Precision(requested, device)


def configure(device: torch.device, training: TrainingConfig) -> Precision:
    """Set the process's matmul precision for the job (a worker child runs one job) and resolve its
    training precision. TF32 on a GPU unless `precision` is fp32: exact float32 asked for stays exact."""
    if device.type == "cuda":
        tf32 = training.precision != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return resolve_precision(training.precision, device)


def memory_format(spec: ArchitectureSpec | None, device: torch.device) -> torch.memory_format:
    """Channels-last for convolutional models on a GPU (tensor cores read NHWC); else as stored."""
    if device.type == "cuda" and spec is not None and spec.family == "cnn":
        return torch.channels_last
    return torch.preserve_format


def formatted(x: Tensor, memory: torch.memory_format) -> Tensor:
    return x.contiguous(memory_format=memory) if memory is torch.channels_last and x.dim() == 4 else x


def compile_model(model: nn.Module, reporter: Reporter) -> None:
    """`torch.compile` the model in place (its state_dict keeps its names); it compiles at its first call,
    where `compiled_call` falls back to running it eagerly if that fails."""
    model.compile()
    reporter.event(
        "The student is compiled with torch.compile (the first steps take longer while it compiles)."
    )


def compiled_call(model: nn.Module, x: Tensor, reporter: Reporter) -> Tensor:
    """The model's output on `x` (`model` may be a DistributedDataParallel around it); a compiled model that
    fails to compile runs eagerly from then on."""
    plain = model.module if isinstance(model, DistributedDataParallel) else model
    if not is_compiled(plain):
        return model(x)
    try:
        return model(x)
    except Exception as error:  # the compiler's failures are of every kind
        log.warning("torch.compile failed; running eagerly", exc_info=True)
        uncompile(plain)
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        reporter.event(
            f"torch.compile failed ({type(error).__name__}: {first_line}): the student trains without it.",
            "warning",
        )
        return model(x)


def is_compiled(model: nn.Module) -> bool:
    return getattr(model, "_compiled_call_impl", None) is not None


def uncompile(model: nn.Module) -> None:
    """Back to eager calls: exports, latencies and deployment run the plain model."""
    model._compiled_call_impl = None
