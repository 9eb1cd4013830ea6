"""Phase "validating": load and check the data and the teachers, and build students with what trains
them. Everything that can fail cheaply fails here, in seconds, with an error that says what to change."""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from engine.augment import check_augmentation
from engine.checks import (
    check_batch_norm_batches,
    check_labels,
    check_student_input,
    probe_teacher,
    teacher_rejections,
)
from engine.data import ArrayDataset, split_holdout
from engine.derive import init_from_teacher
from engine.ensemble import TeacherEnsemble
from engine.errors import DistillError
from engine.evaluate import accuracy, evaluating
from engine.features import FeatureDistiller, sample_shapes
from engine.hooks import LayerTaps
from engine.models import build_model, count_parameters
from engine.objective import Objective
from engine.reporting import Reporter
from engine.specs import ArchitectureSpec, EngineJob, TrainingConfig
from engine.teachers import load_teacher
from engine.transformer_distillation import (
    capture_paths,
    check_tokenizer,
    check_transformer_distillation,
    common_length,
    load_dataset,
    student_layer_taps,
    transformer_term,
)


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


def prepare(
    job: EngineJob,
    teacher_paths: list[Path],
    train_path: Path,
    validation_path: Path | None,
    device: torch.device,
    reporter: Reporter,
    tokenizer_path: Path | None = None,
) -> Setup:
    reporter.event(f"Device: {device}")
    spec, batch_size = job.student_architecture, job.training.batch_size
    check_transformer_distillation(job)
    if tokenizer_path is not None:
        check_tokenizer(job, tokenizer_path, reporter)
    train, validation = load_datasets(
        job.training, train_path, validation_path, reporter, spec, tokenizer_path
    )
    check_student_input(spec, train)
    check_student_input(spec, validation)
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
    layer_paths = teacher_layer_paths(job)
    models = []
    for number, (source, path) in enumerate(zip(job.teachers, paths, strict=True), start=1):
        teacher = load_teacher(path, source.format, source.architecture, tapped=bool(layer_paths[number - 1]))
        teacher = teacher.to(device)
        name = "Teacher" if len(job.teachers) == 1 else f"Teacher {number} of {len(job.teachers)}"
        reporter.event(f"{name} loaded ({source.format}): {count_parameters(teacher):,} parameters")
        probe_teacher(teacher, train, job.training.batch_size, job.student_architecture.num_classes, device)
        models.append(teacher)
    weights = [source.weight for source in job.teachers]
    return TeacherEnsemble(models, weights, job.distillation.ensemble, layer_paths)


def teacher_layer_paths(job: EngineJob) -> list[list[str]]:
    """The layers the job reads from each teacher: feature pairs' and TinyBERT's."""
    count = len(job.teachers)
    for pair in job.distillation.features:
        if pair.teacher_index >= count:
            raise DistillError(
                "unknown_teacher",
                f"a feature pair reads teacher {pair.teacher_index} but the job has {count} "
                "teacher(s); teacher_index counts from 0",
            )
    paths = [[p.teacher for p in job.distillation.features if p.teacher_index == i] for i in range(count)]
    if job.distillation.transformer is not None:
        paths[0] += capture_paths(job.teachers[0].architecture)
    return paths


def build_student(
    setup: Setup, job: EngineJob, spec: ArchitectureSpec, seed: int, reporter: Reporter
) -> Student:
    torch.manual_seed(seed)  # right before building: the student's init depends on the seed only
    model = build_model(spec).to(setup.device)
    reporter.event(f"Student built ({spec.family}): {count_parameters(model):,} parameters")
    if job.student_init == "teacher":
        reporter.event(initialise_from_teacher(model, job, setup.teachers))
    taps = student_layer_taps(job, model, spec)
    features = feature_distiller(job, model, taps, setup.teachers, setup.train)
    transformer = transformer_term(job, spec, taps)
    return Student(spec, model, taps, Objective(job.distillation, features, transformer).to(setup.device))


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
            f"teacher layer(s) {', '.join(map(repr, missing))} produced no output: the module exists but "
            "its forward never ran (in a pt2 teacher, torch.export may have inlined or merged the call); "
            "pick a layer that runs in forward, or use a safetensors teacher for feature distillation",
        )
    student_shapes = sample_shapes(student_taps.outputs, "student")
    teacher_shapes = [sample_shapes(outputs, "teacher") for outputs in teachers.layer_outputs()]
    return FeatureDistiller(pairs, student_shapes, teacher_shapes)


def load_datasets(
    config: TrainingConfig,
    train_path: Path,
    validation_path: Path | None,
    reporter: Reporter,
    student: ArchitectureSpec | None = None,
    tokenizer_path: Path | None = None,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Features from .npz archives; for a transformer `student`, token ids (see `load_dataset`)."""
    train = load_dataset(train_path, student, tokenizer_path)
    if validation_path is not None:
        validation = load_dataset(validation_path, student, tokenizer_path)
        source = "from the validation file"
        if student is not None and student.family == "transformer":
            train, validation = common_length(train, validation)
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
