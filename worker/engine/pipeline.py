"""A distillation job from files to artifacts.

Phase "validating" checks everything that can fail cheaply (files, shapes, labels, the teacher on
real batches) so a job fails in seconds with an actionable error, not after hours of training.
Phase "running" trains the student against the frozen teacher, evaluates it and exports it.
"""

import json
import math
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from worker.engine.data import ArrayDataset, batch_bounds, iterate_batches, load_npz, split_holdout
from worker.engine.errors import DistillError, JobCancelled
from worker.engine.evaluate import accuracy, classification_metrics, final_metrics, predict
from worker.engine.export import export_student
from worker.engine.losses import LossTerms, distillation_loss
from worker.engine.models import build_model, cnn_output_size, count_parameters
from worker.engine.specs import CNNSpec, EngineJob, MLPSpec, TrainingConfig
from worker.engine.teachers import load_teacher

METRICS_FILE = "metrics.json"
MAX_REASON_CHARS = 600


class Reporter(Protocol):
    def event(self, message: str, level: str = "info") -> None: ...  # human-readable events

    def phase(self, phase: str) -> None: ...  # "validating" then "running"

    def progress(self, epoch: int, epochs: int, step: int, total_steps: int) -> None: ...  # every step

    def metrics(self, epoch: int, step: int, values: dict[str, float]) -> None: ...  # once per epoch

    def should_stop(self) -> bool: ...  # checked every step


@dataclass
class DistillResult:
    metrics: dict  # see evaluate.final_metrics
    series: list[dict]  # {"step", "epoch", "name", "value"} for everything passed to reporter.metrics
    artifacts: dict[str, Path]  # student.safetensors, student.json, student.pt2, metrics.json


@dataclass
class Setup:
    """Everything validated and in place for training."""

    device: torch.device
    train: ArrayDataset
    validation: ArrayDataset
    teacher: nn.Module
    teacher_validation_logits: Tensor  # computed once: the teacher is frozen
    student: nn.Module


def run_distillation(
    job: EngineJob,
    teacher_path: Path,
    train_path: Path,
    validation_path: Path | None,
    out_dir: Path,
    reporter: Reporter,
) -> DistillResult:
    started = time.perf_counter()
    device = torch.device("cpu")
    try:
        reporter.phase("validating")
        device = resolve_device(job.training.device)
        setup = prepare(job, teacher_path, train_path, validation_path, device, reporter)
        reporter.phase("running")
        series = train_student(setup, job, reporter)
        return finish(setup, job, series, out_dir, started, reporter)
    except BaseException as error:
        # The traceback's frames would keep the models and batches (GPU memory) alive.
        traceback.clear_frames(error.__traceback__)
        raise
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DistillError(
            "device_unavailable", "device is 'cuda' but this worker has no GPU: use 'auto' or 'cpu'"
        )
    return torch.device(name)


# --- validating -------------------------------------------------------------------------------


def prepare(
    job: EngineJob,
    teacher_path: Path,
    train_path: Path,
    validation_path: Path | None,
    device: torch.device,
    reporter: Reporter,
) -> Setup:
    reporter.event(f"Device: {device}")
    spec, batch_size = job.student_architecture, job.training.batch_size
    train, validation = load_datasets(job.training, train_path, validation_path, reporter)
    check_student_input(spec, train)
    check_batch_norm_batches(spec, len(train), batch_size)

    teacher = load_teacher(teacher_path, job.teacher_format, job.teacher_architecture).to(device)
    reporter.event(f"Teacher loaded ({job.teacher_format}): {count_parameters(teacher):,} parameters")
    # Before the label check: a wrong num_classes is the likelier cause of out-of-range labels.
    probe_teacher(teacher, train, batch_size, spec.num_classes, device)
    check_labels(train, validation, job, reporter)
    with teacher_rejections(validation.x[:batch_size]):
        teacher_validation_logits = predict(teacher, validation.x, batch_size, device)
    if validation.labeled:
        reporter.event(
            f"Teacher validation accuracy: {accuracy(teacher_validation_logits, validation.y):.2%}"
        )

    torch.manual_seed(job.training.seed)  # right before building: the student's init depends on the seed only
    student = build_model(spec).to(device)
    reporter.event(f"Student built ({spec.family}): {count_parameters(student):,} parameters")
    return Setup(device, train, validation, teacher, teacher_validation_logits, student)


def load_datasets(
    config: TrainingConfig, train_path: Path, validation_path: Path | None, reporter: Reporter
) -> tuple[ArrayDataset, ArrayDataset]:
    train = load_npz(train_path)
    if validation_path is not None:
        validation = load_npz(validation_path)
        source = "from the validation file"
    else:
        train, validation = split_holdout(train, config.validation_fraction, config.seed)
        source = f"held out from the training file ({config.validation_fraction:.0%}, seed {config.seed})"
    if validation.x.shape[1:] != train.x.shape[1:]:
        raise DistillError(
            "dataset_invalid",
            f"validation samples have shape {list(validation.x.shape[1:])} but training samples have shape "
            f"{list(train.x.shape[1:])}; they must match",
        )
    labels = "labeled" if train.labeled else "unlabeled"
    reporter.event(
        f"Dataset: {len(train):,} training samples ({labels}), {len(validation):,} validation samples "
        f"{source}; sample shape {list(train.x.shape[1:])}"
    )
    return train, validation


def check_student_input(spec: MLPSpec | CNNSpec, train: ArrayDataset) -> None:
    sample_shape = list(train.x.shape[1:])
    if spec.family == "mlp":
        # An MLP flattens its input, so only the number of values per sample matters.
        if math.prod(sample_shape) != math.prod(spec.input_shape):
            raise DistillError(
                "incompatible_shapes",
                f"dataset samples have shape {sample_shape} ({math.prod(sample_shape):,} values) but "
                f"student_architecture.input_shape is {spec.input_shape} "
                f"({math.prod(spec.input_shape):,} values)",
            )
    elif sample_shape != spec.input_shape:
        raise DistillError(
            "incompatible_shapes",
            f"dataset samples have shape {sample_shape} but student_architecture.input_shape is "
            f"{spec.input_shape}",
        )


def check_labels(train: ArrayDataset, validation: ArrayDataset, job: EngineJob, reporter: Reporter) -> None:
    num_classes = job.student_architecture.num_classes
    for name, dataset in (("training", train), ("validation", validation)):
        if dataset.y is None:
            continue
        out_of_range = (dataset.y < 0) | (dataset.y >= num_classes)
        if out_of_range.any():
            raise DistillError(
                "labels_out_of_range",
                f"{int(out_of_range.sum()):,} {name} labels are outside [0, {num_classes}) "
                f"(min {int(dataset.y.min())}, max {int(dataset.y.max())}): labels must be class indices "
                "below student_architecture.num_classes",
            )
    if train.labeled:
        return
    if job.distillation.alpha == 0:
        raise DistillError(
            "labels_required",
            "alpha is 0, so only the hard-label loss would train the student, but the training set has no "
            "'y' array: add labels or set alpha > 0",
        )
    if job.distillation.beta > 0:
        reporter.event(
            f"The training set has no labels: the hard-label loss (beta={job.distillation.beta}) is skipped "
            "and the student learns from the teacher alone",
            level="warning",
        )


def check_batch_norm_batches(spec: MLPSpec | CNNSpec, num_train: int, batch_size: int) -> None:
    """BatchNorm in training mode needs more than one value per channel; a CNN whose last stage
    is 1x1 gets exactly one from a batch of one sample."""
    if spec.family != "cnn" or cnn_output_size(spec) != (1, 1):
        return
    if min(end - start for start, end in batch_bounds(num_train, batch_size)) == 1:
        raise DistillError(
            "incompatible_shapes",
            f"the student's last stage sees 1x1 feature maps, which BatchNorm cannot train on batches of "
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
    except DistillError:
        raise
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[:MAX_REASON_CHARS] + " ..."
        raise DistillError(
            "teacher_rejected_input",
            f"the teacher failed on a batch of shape {list(x.shape)} (dataset x has samples of shape "
            f"{list(x.shape[1:])}): {reason}",
        ) from None


def check_teacher_output(output: object, x: Tensor, num_classes: int) -> None:
    expected = f"logits of shape [{len(x)}, classes] for a batch of shape {list(x.shape)}"
    if not isinstance(output, Tensor) or not output.is_floating_point():
        kind = f"a {output.dtype} tensor" if isinstance(output, Tensor) else type(output).__name__
        raise DistillError(
            "teacher_rejected_input", f"the teacher returned {kind}; expected float {expected}"
        )
    if output.ndim != 2 or output.shape[0] != len(x):
        raise DistillError(
            "teacher_rejected_input", f"the teacher returned shape {list(output.shape)}; expected {expected}"
        )
    if output.shape[1] != num_classes:
        raise DistillError(
            "incompatible_shapes",
            f"the teacher outputs {output.shape[1]} classes but student_architecture.num_classes is "
            f"{num_classes}; they must be equal",
        )


# --- running ----------------------------------------------------------------------------------


def train_student(setup: Setup, job: EngineJob, reporter: Reporter) -> list[dict]:
    config, student, teacher, device = job.training, setup.student, setup.teacher, setup.device
    generator = torch.Generator().manual_seed(config.seed)  # the shuffle order, independent of model RNG
    total_steps = config.epochs * len(batch_bounds(len(setup.train), config.batch_size))
    optimizer = make_optimizer(student, config)
    scheduler = make_scheduler(optimizer, config.lr_schedule, total_steps)
    series: list[dict] = []
    step = 0
    for epoch in range(1, config.epochs + 1):
        student.train()
        epoch_losses = RunningMeans()
        for x, y in iterate_batches(setup.train, config.batch_size, generator, shuffle=True):
            if reporter.should_stop():
                raise JobCancelled(f"stopped at epoch {epoch}, step {step} of {total_steps}")
            step += 1
            x, y = x.to(device), None if y is None else y.to(device)
            with torch.no_grad():
                teacher_logits = teacher(x).float()
            terms = distillation_loss(student(x), teacher_logits, y, job.distillation)
            losses = loss_values(terms)
            if not math.isfinite(losses["loss"]):
                raise divergence(losses["loss"], teacher_logits, epoch, step, job)
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            scheduler.step()
            epoch_losses.add(losses, weight=len(x))
            reporter.progress(epoch, config.epochs, step, total_steps)
        values = epoch_losses.means() | validation_scores(setup, config.batch_size)
        reporter.metrics(epoch, step, values)
        series += [
            {"step": step, "epoch": epoch, "name": name, "value": value} for name, value in values.items()
        ]
        reporter.event(epoch_summary(epoch, config.epochs, values))
    return series


def make_optimizer(model: nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    parameters, lr, decay = model.parameters(), config.learning_rate, config.weight_decay
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=config.momentum, weight_decay=decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=decay)
    return torch.optim.Adam(parameters, lr=lr, weight_decay=decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A learning-rate factor per step: 1 throughout, or a cosine from 1 down to 0 at the last step."""
    if schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def loss_values(terms: LossTerms) -> dict[str, float]:
    """The batch's loss terms as floats, in one device-to-host copy."""
    names = ["loss", "soft_loss"] + ([] if terms.hard is None else ["hard_loss"])
    tensors = [terms.total, terms.soft] + ([] if terms.hard is None else [terms.hard])
    return dict(zip(names, torch.stack(tensors).detach().tolist(), strict=True))


class RunningMeans:
    """Per-sample means of per-batch values, weighting each batch by its size."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weight = 0

    def add(self, values: dict[str, float], weight: int) -> None:
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * weight
        self.weight += weight

    def means(self) -> dict[str, float]:
        return {name: total / self.weight for name, total in self.sums.items()}


def divergence(loss: float, teacher_logits: Tensor, epoch: int, step: int, job: EngineJob) -> DistillError:
    if not torch.isfinite(teacher_logits).all():
        return DistillError(
            "loss_diverged",
            f"the teacher produced NaN or infinite logits at epoch {epoch}, step {step}, so the loss is "
            f"{loss}: check the teacher's weights and the input data",
        )
    return DistillError(
        "loss_diverged",
        f"the loss became {loss} at epoch {epoch}, step {step}: training diverged. Try a lower learning_rate "
        f"(now {job.training.learning_rate}) or temperature (now {job.distillation.temperature})",
    )


def validation_scores(setup: Setup, batch_size: int) -> dict[str, float]:
    student_logits = predict(setup.student, setup.validation.x, batch_size, setup.device)
    scores = classification_metrics(setup.teacher_validation_logits, student_logits, setup.validation.y)
    values = {"validation_agreement": scores["agreement"]}
    if scores["student_accuracy"] is not None:
        values = {"validation_accuracy": scores["student_accuracy"]} | values
    return values


def epoch_summary(epoch: int, epochs: int, values: dict[str, float]) -> str:
    parts = [f"loss {values['loss']:.4f}"]
    if "validation_accuracy" in values:
        parts.append(f"validation accuracy {values['validation_accuracy']:.2%}")
    parts.append(f"agreement with the teacher {values['validation_agreement']:.2%}")
    return f"Epoch {epoch}/{epochs}: " + ", ".join(parts)


# --- finishing --------------------------------------------------------------------------------


def finish(
    setup: Setup, job: EngineJob, series: list[dict], out_dir: Path, started: float, reporter: Reporter
) -> DistillResult:
    batch_size = job.training.batch_size
    student_logits = predict(setup.student, setup.validation.x, batch_size, setup.device)
    metrics = final_metrics(
        setup.teacher_validation_logits,
        student_logits,
        setup.validation.y,
        teacher_parameters=count_parameters(setup.teacher),
        student_parameters=count_parameters(setup.student),
    )
    artifacts = export_student(setup.student, job.student_architecture, setup.train.x[:1], out_dir)
    seconds = time.perf_counter() - started
    metrics_path = out_dir / METRICS_FILE
    summary = {"final": metrics, "series": series, "device": str(setup.device), "seconds": seconds}
    metrics_path.write_text(json.dumps(summary, indent=2) + "\n")
    artifacts[METRICS_FILE] = metrics_path
    reporter.event(
        f"Finished in {seconds:.1f} s: student agreement with the teacher {metrics['agreement']:.2%}, "
        f"{metrics['compression']:.1f}x fewer parameters; exported {', '.join(artifacts)}"
    )
    return DistillResult(metrics=metrics, series=series, artifacts=artifacts)
