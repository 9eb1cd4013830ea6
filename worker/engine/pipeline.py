"""A distillation job from files to artifacts.

Phase "validating" checks everything that can fail cheaply (files, shapes, labels, the teachers on
real batches, the feature layers) so a job fails in seconds with an actionable error, not after hours.
Phase "running" trains the student against the frozen teachers, evaluates it and exports it.
"""

import json
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from worker.engine.augment import augment, check_augmentation
from worker.engine.checks import (
    check_batch_norm_batches,
    check_labels,
    check_student_input,
    probe_teacher,
    teacher_rejections,
)
from worker.engine.data import ArrayDataset, batch_bounds, iterate_batches, load_npz, split_holdout
from worker.engine.derive import init_from_teacher
from worker.engine.ensemble import TeacherEnsemble
from worker.engine.errors import DistillError, JobCancelled
from worker.engine.evaluate import accuracy, classification_metrics, evaluating, final_metrics, predict
from worker.engine.export import export_student
from worker.engine.features import FeatureDistiller, sample_shapes
from worker.engine.hooks import LayerTaps
from worker.engine.losses import TeacherOutputs, scheduled_temperature
from worker.engine.models import build_model, count_parameters
from worker.engine.objective import Objective
from worker.engine.quantize import INT8_PROGRAM, export_int8, quantize_int8
from worker.engine.reporting import Reporter
from worker.engine.specs import ArchitectureSpec, EngineJob, TrainingConfig
from worker.engine.teachers import load_teacher

METRICS_FILE = "metrics.json"

__all__ = ["DistillResult", "Reporter", "run_distillation"]


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
    teachers: TeacherEnsemble
    teacher_validation_logits: Tensor  # computed once: the teachers are frozen


@dataclass
class Student:
    """A student with what trains it: its layer taps and its objective (whose projections train too)."""

    spec: ArchitectureSpec
    model: nn.Module
    taps: LayerTaps
    objective: Objective


def run_distillation(
    job: EngineJob,
    teacher_paths: list[Path],
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
        setup = prepare(job, teacher_paths, train_path, validation_path, device, reporter)
        student = build_student(setup, job, job.student_architecture, job.training.seed, reporter)
        reporter.phase("running")
        series = train_student(setup, student, job, reporter)
        return finish(setup, student, job, series, out_dir, started, reporter)
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
    teacher_paths: list[Path],
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
    check_augmentation(job.training.augmentation, list(train.x.shape[1:]))

    teachers = load_teachers(job, teacher_paths, train, device, reporter)
    check_labels(train, validation, job, reporter)  # after the teachers: a wrong num_classes is likelier
    with teacher_rejections(validation.x[:batch_size]):
        teacher_validation_logits = teachers.predict(validation.x, batch_size, device)
    if validation.labeled:
        who = "Teacher" if len(teachers) == 1 else "Teacher ensemble"
        reporter.event(f"{who} validation accuracy: {accuracy(teacher_validation_logits, validation.y):.2%}")

    return Setup(device, train, validation, teachers, teacher_validation_logits)


def load_teachers(
    job: EngineJob, paths: list[Path], train: ArrayDataset, device: torch.device, reporter: Reporter
) -> TeacherEnsemble:
    models = []
    for number, (source, path) in enumerate(zip(job.teachers, paths, strict=True), start=1):
        teacher = load_teacher(path, source.format, source.architecture).to(device)
        name = "Teacher" if len(job.teachers) == 1 else f"Teacher {number} of {len(job.teachers)}"
        reporter.event(f"{name} loaded ({source.format}): {count_parameters(teacher):,} parameters")
        probe_teacher(teacher, train, job.training.batch_size, job.student_architecture.num_classes, device)
        models.append(teacher)
    for pair in job.distillation.features:
        if pair.teacher_index >= len(models):
            raise DistillError(
                "unknown_teacher",
                f"a feature pair reads teacher {pair.teacher_index} but the job has {len(models)} "
                "teacher(s); teacher_index counts from 0",
            )
    layer_paths = [
        [p.teacher for p in job.distillation.features if p.teacher_index == i] for i in range(len(models))
    ]
    weights = [source.weight for source in job.teachers]
    return TeacherEnsemble(models, weights, job.distillation.ensemble, layer_paths)


def build_student(
    setup: Setup, job: EngineJob, spec: ArchitectureSpec, seed: int, reporter: Reporter
) -> Student:
    torch.manual_seed(seed)  # right before building: the student's init depends on the seed only
    model = build_model(spec).to(setup.device)
    reporter.event(f"Student built ({spec.family}): {count_parameters(model):,} parameters")
    if job.student_init == "teacher":
        reporter.event(initialise_from_teacher(model, job, setup.teachers))
    taps = LayerTaps(model, [pair.student for pair in job.distillation.features], "student")
    features = feature_distiller(job, model, taps, setup.teachers, setup.train)
    return Student(spec, model, taps, Objective(job.distillation, features).to(setup.device))


def initialise_from_teacher(student: nn.Module, job: EngineJob, teachers: TeacherEnsemble) -> str:
    teacher_spec = job.teachers[0].architecture
    if teacher_spec is None:
        raise DistillError(
            "architecture_required",
            "the student is initialised from the teacher's layers, which needs the teacher's architecture: "
            "use a safetensors teacher",
        )
    state = teachers.teachers[0].state_dict()
    return init_from_teacher(student, state, job.student_architecture, teacher_spec).summary


def feature_distiller(
    job: EngineJob,
    student: nn.Module,
    student_taps: LayerTaps,
    teachers: TeacherEnsemble,
    train: ArrayDataset,
) -> FeatureDistiller | None:
    """Projections sized from one probe batch through the student and the teachers."""
    pairs = job.distillation.features
    if not pairs:
        return None
    x = train.x[:2].to(next(student.parameters()).device)
    with evaluating(student), torch.no_grad():
        student(x)
        teachers(x)
    missing = [p.teacher for p in pairs if p.teacher not in teachers.layer_outputs()[p.teacher_index]]
    if missing:
        raise DistillError(
            "unknown_layer",
            f"teacher layer(s) {', '.join(map(repr, missing))} produced no output: a pt2 teacher is one flat "
            "graph whose layers cannot be tapped; use a safetensors teacher for feature distillation",
        )
    student_shapes = sample_shapes(student_taps.outputs, "student")
    teacher_shapes = [sample_shapes(outputs, "teacher") for outputs in teachers.layer_outputs()]
    return FeatureDistiller(pairs, student_shapes, teacher_shapes)


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


# --- running ----------------------------------------------------------------------------------


def train_student(setup: Setup, trained: Student, job: EngineJob, reporter: Reporter) -> list[dict]:
    config, distillation, student = job.training, job.distillation, trained.model
    generator = torch.Generator().manual_seed(config.seed)  # the shuffle order, independent of model RNG
    total_steps = config.epochs * len(batch_bounds(len(setup.train), config.batch_size))
    optimizer = make_optimizer([*student.parameters(), *trained.objective.parameters()], config)
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
            x, y = x.to(setup.device), None if y is None else y.to(setup.device)
            x = augment(x, config.augmentation, generator)
            temperature = temperature_at(distillation, step, total_steps)
            teachers = setup.teachers(x, generator)
            terms = trained.objective(
                student(x),
                teachers,
                y,
                temperature,
                trained.taps.outputs,
                setup.teachers.layer_outputs(),
            )
            losses = loss_values(terms)
            if not math.isfinite(losses["loss"]):
                raise divergence(losses["loss"], teachers, epoch, step, job)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            scheduler.step()
            epoch_losses.add(losses, weight=len(x))
            reporter.progress(epoch, config.epochs, step, total_steps)
        values = epoch_losses.means() | validation_scores(setup, student, config.batch_size)
        if distillation.final_temperature is not None:
            values["temperature"] = temperature
        reporter.metrics(epoch, step, values)
        series += [
            {"step": step, "epoch": epoch, "name": name, "value": value} for name, value in values.items()
        ]
        reporter.event(epoch_summary(epoch, config.epochs, values))
    return series


def temperature_at(distillation, step: int, total_steps: int) -> float:
    progress = (step - 1) / max(total_steps - 1, 1)
    return scheduled_temperature(
        distillation.temperature, distillation.final_temperature, distillation.temperature_schedule, progress
    )


def make_optimizer(parameters: list[nn.Parameter], config: TrainingConfig) -> torch.optim.Optimizer:
    lr, decay = config.learning_rate, config.weight_decay
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


def loss_values(terms: dict[str, Tensor]) -> dict[str, float]:
    """The batch's loss terms as floats, in one device-to-host copy."""
    values = torch.stack([term.detach().float() for term in terms.values()]).tolist()
    return dict(zip(terms, values, strict=True))


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


def divergence(loss: float, teachers: TeacherOutputs, epoch: int, step: int, job: EngineJob) -> DistillError:
    if not torch.isfinite(teachers.logits).all():
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


def validation_scores(setup: Setup, student: nn.Module, batch_size: int) -> dict[str, float]:
    student_logits = predict(student, setup.validation.x, batch_size, setup.device)
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


def int8_metrics(
    setup: Setup, student: nn.Module, student_logits: Tensor, artifacts: dict[str, Path], batch_size: int
) -> dict:
    """The int8 student measured on the validation set like the float one, and both files' sizes."""
    int8_logits = predict(quantize_int8(student), setup.validation.x, batch_size, setup.device)
    labels = setup.validation.y
    return {
        "accuracy": None if labels is None else accuracy(int8_logits, labels),
        "agreement": accuracy(int8_logits, student_logits.argmax(dim=1)),
        "bytes": artifacts[INT8_PROGRAM].stat().st_size,
        "float_bytes": artifacts["student.pt2"].stat().st_size,
    }


def finish(
    setup: Setup,
    trained: Student,
    job: EngineJob,
    series: list[dict],
    out_dir: Path,
    started: float,
    reporter: Reporter,
) -> DistillResult:
    student = trained.model
    batch_size = job.training.batch_size
    student_logits = predict(student, setup.validation.x, batch_size, setup.device)
    metrics = final_metrics(
        setup.teacher_validation_logits,
        student_logits,
        setup.validation.y,
        teacher_parameters=setup.teachers.parameter_count(),
        student_parameters=count_parameters(student),
    )
    trained.taps.remove()  # the exported student must carry no hooks
    example = setup.train.x[:1]
    artifacts = export_student(student, trained.spec, example, out_dir)
    if "int8" in job.export:
        artifacts[INT8_PROGRAM] = export_int8(student, example, out_dir)
        metrics["int8"] = int8_metrics(setup, student, student_logits, artifacts, batch_size)
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
