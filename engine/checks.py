"""Checks of the validating phase: cheap, before any training, each failure a `JobFailed` that says
what to change."""

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from engine.data.arrays import ArrayDataset, batch_bounds, smallest_batch
from engine.plan.errors import JobFailed
from engine.plan.search_space import searched
from engine.plan.sizes import stage_resolutions
from engine.plan.specs import (
    ArchitectureSpec,
    EngineJob,
    HFSpec,
    TransformerSpec,
    reads_token_ids,
    vocabulary_size,
)
from engine.reporting import Reporter

MAX_REASON_CHARS = 600


def check_student_input(
    spec: ArchitectureSpec, dataset: ArrayDataset, field: str = "student.architecture"
) -> None:
    """The samples fit the model the job trains (the student, or the peer named by `field`)."""
    sample_shape = list(dataset.x.shape[1:])
    if reads_token_ids(spec):
        check_token_ids(spec, dataset.x, field)
    elif spec.family == "mlp":
        # An MLP flattens its input, so only the number of values per sample matters.
        if math.prod(sample_shape) != math.prod(spec.input_shape):
            raise JobFailed(
                "incompatible_shapes",
                f"dataset samples have shape {sample_shape} ({math.prod(sample_shape):,} values) but "
                f"{field}.input_shape is {spec.input_shape} ({math.prod(spec.input_shape):,} values)",
            )
    elif sample_shape != spec.input_shape:
        raise JobFailed(
            "incompatible_shapes",
            f"dataset samples have shape {sample_shape} but {field}.input_shape is {spec.input_shape}",
        )


def check_token_ids(spec: TransformerSpec | HFSpec, x: Tensor, field: str = "student.architecture") -> None:
    """Token ids [N, L] (as `datasets.load_dataset` reads them) that the text model can embed:
    L <= max_length, every id < vocab_size."""
    if x.shape[1] > spec.max_length:
        raise JobFailed(
            "incompatible_shapes",
            f"dataset sequences have {x.shape[1]} tokens but {field}.max_length is "
            f"{spec.max_length}: truncate the ids to at most {spec.max_length}, or raise max_length",
        )
    largest, vocabulary = int(x.max()) if x.numel() else 0, vocabulary_size(spec)
    if vocabulary is not None and largest >= vocabulary:
        raise JobFailed(
            "vocabulary_mismatch",
            f"the dataset has token id {largest:,} but {field}.vocab_size is "
            f"{vocabulary:,} (ids 0 to {vocabulary - 1:,}): set vocab_size to at least "
            f"{largest + 1:,}, or tokenize with the tokenizer the models were built for",
        )


def check_labels(train: ArrayDataset, validation: ArrayDataset, job: EngineJob, reporter: Reporter) -> None:
    """Labels are class indices of the student, and there are labels wherever the job needs them."""
    num_classes = job.student_architecture.num_classes
    for name, dataset in (("training", train), ("validation", validation)):
        if dataset.y is None:
            continue
        out_of_range = (dataset.y < 0) | (dataset.y >= num_classes)
        if out_of_range.any():
            raise JobFailed(
                "labels_out_of_range",
                f"{int(out_of_range.sum()):,} {name} labels are outside [0, {num_classes}) "
                f"(min {int(dataset.y.min())}, max {int(dataset.y.max())}): labels must be class indices "
                "below student_architecture.num_classes",
            )
    distillation = job.distillation
    if searched(job) and not validation.labeled:
        raise JobFailed(
            "labels_required",
            "'auto' values are picked by validation accuracy, but the validation set has no "
            "labels: give a labeled validation file (or labeled training data), or fixed values",
        )
    if train.labeled:
        return
    if distillation.alpha == 0 and not distillation.features and distillation.transformer is None:
        raise JobFailed(
            "labels_required",
            "alpha is 0, so only the hard-label loss would train the student, but the training set has no "
            "'y' array: add labels or set alpha > 0",
        )
    if distillation.beta > 0:
        reporter.event(
            f"The training set has no labels: the hard-label loss (beta={distillation.beta}) is skipped "
            "and the student learns from the teacher alone",
            level="warning",
        )


def check_batch_norm_batches(
    spec: ArchitectureSpec, num_train: int, batch_size: int, field: str = "student.architecture"
) -> None:
    """BatchNorm in training mode needs more than one value per channel; a CNN whose last stage
    is 1x1 gets exactly one from a batch of one sample."""
    if spec.family != "cnn" or stage_resolutions(spec)[-1] != (1, 1):
        return
    if smallest_batch(num_train, batch_size) == 1:
        raise JobFailed(
            "incompatible_shapes",
            f"the last stage of {field} sees 1x1 feature maps, which BatchNorm cannot train on batches of "
            f"one sample (batch_size {batch_size}, {num_train} training samples): use batch_size >= 2 "
            "or fewer stages in widths",
        )


def probe_teacher(
    teacher: nn.Module, train: ArrayDataset, batch_size: int, num_classes: int, device: torch.device
) -> None:
    """Run the teacher on every batch size training will feed it, so a teacher exported with a
    fixed batch size or expecting other inputs fails now rather than mid-epoch."""
    sizes = sorted({end - start for start, end in batch_bounds(len(train), batch_size)}, reverse=True)
    for size in sizes:
        x = train.x[:size]
        with teacher_rejections(x), torch.no_grad():
            output = teacher(x.to(device))
        check_teacher_output(output, x, num_classes)


@contextmanager
def teacher_rejections(x: Tensor) -> Iterator[None]:
    """Turn any exception from running the teacher on `x` into `teacher_rejected_input`."""
    try:
        yield
    except JobFailed:
        raise
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[:MAX_REASON_CHARS] + " ..."
        raise JobFailed(
            "teacher_rejected_input",
            f"the teacher failed on a batch of shape {list(x.shape)} (dataset x has samples of shape "
            f"{list(x.shape[1:])}): {reason}",
        ) from None


def check_teacher_output(output: object, x: Tensor, num_classes: int) -> None:
    expected = f"logits of shape [{len(x)}, classes] for a batch of shape {list(x.shape)}"
    if not isinstance(output, Tensor) or not output.is_floating_point():
        kind = f"a {output.dtype} tensor" if isinstance(output, Tensor) else type(output).__name__
        raise JobFailed("teacher_rejected_input", f"the teacher returned {kind}; expected float {expected}")
    if output.ndim != 2 or output.shape[0] != len(x):
        raise JobFailed(
            "teacher_rejected_input", f"the teacher returned shape {list(output.shape)}; expected {expected}"
        )
    if output.shape[1] != num_classes:
        raise JobFailed(
            "incompatible_shapes",
            f"the teacher outputs {output.shape[1]} classes but student_architecture.num_classes is "
            f"{num_classes}; they must be equal",
        )


def check_teacher_logits(logits: Tensor, x: Tensor) -> None:
    """The teachers' logits on the validation set `x` are finite: metrics are never made of NaN."""
    non_finite = int((~torch.isfinite(logits)).any(dim=1).sum())
    if non_finite:
        scale = x.abs().max().item() if x.is_floating_point() else 0.0
        raise JobFailed(
            "teacher_rejected_input",
            f"the teacher produced NaN or infinite logits on {non_finite:,} validation sample(s) (the "
            f"validation inputs reach {scale:.3g} in magnitude): check the teacher's weights, and "
            "standardize the data if it is that large",
        )
