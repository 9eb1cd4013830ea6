"""A distillation job from files to artifacts.

Phase "validating" checks everything that can fail cheaply (files, shapes, labels, the teachers on
real batches, the feature layers) so a job fails in seconds with an actionable error, not after hours.
Phase "running" trains the student against the frozen teachers, evaluates it and exports it.
"""

import copy
import dataclasses
import itertools
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
from worker.engine.data import ArrayDataset, batch_bounds, iterate_batches, split_holdout
from worker.engine.derive import init_from_teacher
from worker.engine.ensemble import TeacherEnsemble
from worker.engine.errors import DistillError, JobCancelled
from worker.engine.evaluate import accuracy, classification_metrics, evaluating, final_metrics, predict
from worker.engine.export import export_student
from worker.engine.features import FeatureDistiller, sample_shapes
from worker.engine.hooks import LayerTaps
from worker.engine.losses import TeacherOutputs, kl_loss, scheduled_temperature
from worker.engine.models import build_model, count_parameters
from worker.engine.objective import Objective
from worker.engine.quantize import INT8_PROGRAM, export_int8, quantize_int8
from worker.engine.reporting import Reporter
from worker.engine.specs import ArchitectureSpec, DistillationConfig, EngineJob, TrainingConfig
from worker.engine.teachers import load_teacher
from worker.engine.transformer_distillation import (
    capture_paths,
    check_tokenizer,
    check_transformer_distillation,
    common_length,
    load_dataset,
    student_layer_taps,
    transformer_term,
)

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
    tokenizer_path: Path | None = None,
) -> DistillResult:
    """`tokenizer_path`: the `tokenizers` JSON file that JSON Lines datasets are tokenized with."""
    started = time.perf_counter()
    device = torch.device("cpu")
    try:
        reporter.phase("validating")
        device = resolve_device(job.training.device)
        setup = prepare(job, teacher_paths, train_path, validation_path, device, reporter, tokenizer_path)
        student = build_student(setup, job, job.student_architecture, job.training.seed, reporter)
        check_method(setup, job)
        reporter.phase("running")
        clock = Clock(reporter, planned_epochs(job), steps_per_epoch(setup, job))
        search, trial_series = None, []
        if job.distillation.searched:
            job, search, trial_series = search_hyperparameters(setup, job, reporter, clock)
            student = build_student(setup, job, job.student_architecture, job.training.seed, reporter)
        candidates = METHODS[job.distillation.method](setup, student, job, reporter, clock)
        return finish(setup, candidates, job, trial_series, search, out_dir, started, reporter)
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


# --- running ----------------------------------------------------------------------------------


class Clock:
    """Counts steps and epochs across every training run of a job (trials, peers, generations), for
    progress, and checks for cancellation at every step."""

    def __init__(self, reporter: Reporter, epochs: int, steps_per_epoch: int):
        self.reporter, self.epochs, self.total_steps = reporter, epochs, epochs * steps_per_epoch
        self.epoch = self.step = 0

    def tick(self) -> None:
        if self.reporter.should_stop():
            raise JobCancelled(f"stopped at step {self.step} of {self.total_steps}")
        self.step += 1
        self.reporter.progress(self.epoch, self.epochs, self.step, self.total_steps)


def steps_per_epoch(setup: Setup, job: EngineJob) -> int:
    return len(batch_bounds(len(setup.train), job.training.batch_size))


def planned_epochs(job: EngineJob) -> int:
    distillation, epochs = job.distillation, job.training.epochs
    trials = len(search_grid(distillation)) * distillation.search.trial_epochs if distillation.searched else 0
    return trials + epochs * (distillation.generations if distillation.method == "born_again" else 1)


def train_cohort(
    setup: Setup, cohort: list[Student], job: EngineJob, reporter: Reporter, clock: Clock, run: str = ""
) -> list[dict]:
    """Train the students together against the teachers; with several, each also learns from the
    others' softened outputs (deep mutual learning). Returns the per-epoch series it reported.

    A job's main run reports under plain metric names; its other runs (`run`: `trial2`, `generation2`)
    under `<run>_<name>`."""
    config, distillation = job.training, job.distillation
    generator = torch.Generator().manual_seed(config.seed)  # the shuffle order, independent of model RNG
    run_steps = config.epochs * steps_per_epoch(setup, job)
    optimizers = [make_optimizer([*s.model.parameters(), *s.objective.parameters()], config) for s in cohort]
    schedulers = [make_scheduler(o, config.lr_schedule, run_steps) for o in optimizers]
    series: list[dict] = []
    run_step = 0
    for epoch in range(1, config.epochs + 1):
        clock.epoch += 1
        means = [RunningMeans() for _ in cohort]
        for student in cohort:
            student.model.train()
        for x, y in iterate_batches(setup.train, config.batch_size, generator, shuffle=True):
            clock.tick()
            run_step += 1
            x, y = x.to(setup.device), None if y is None else y.to(setup.device)
            x = augment(x, config.augmentation, generator)
            temperature = temperature_at(distillation, run_step, run_steps)
            teachers = setup.teachers(x, generator)
            logits = [student.model(x) for student in cohort]
            for k, (student, optimizer, scheduler) in enumerate(
                zip(cohort, optimizers, schedulers, strict=True)
            ):
                terms = student.objective(
                    logits[k], teachers, y, temperature, student.taps.outputs, setup.teachers.layer_outputs()
                )
                if len(cohort) > 1:
                    terms = terms | mutual_terms(
                        logits, k, temperature, distillation.mutual_weight, terms["loss"]
                    )
                losses = loss_values(terms)
                if not math.isfinite(losses["loss"]):
                    raise divergence(losses["loss"], teachers, clock.epoch, clock.step, job)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                optimizer.step()
                scheduler.step()
                means[k].add(losses, weight=len(x))
        values = epoch_values(setup, cohort, means, config.batch_size)
        if distillation.final_temperature is not None:
            values["temperature"] = temperature
        reporter.event(epoch_summary(epoch, config.epochs, values, run))
        values = {f"{run}_{name}" if run else name: value for name, value in values.items()}
        reporter.metrics(clock.epoch, clock.step, values)
        series += [
            {"step": clock.step, "epoch": clock.epoch, "name": n, "value": v} for n, v in values.items()
        ]
    return series


def mutual_terms(logits: list[Tensor], k: int, temperature: float, weight: float, loss: Tensor) -> dict:
    """Student k's KL to its peers' (detached) mean softened distribution, added to its loss."""
    peers = torch.stack([other.detach() for j, other in enumerate(logits) if j != k])
    peer_outputs = TeacherOutputs(peers, torch.full((len(peers),), 1 / len(peers), device=peers.device))
    mutual = kl_loss(logits[k], peer_outputs, temperature)
    return {"loss": loss + weight * mutual, "mutual_loss": mutual}


def epoch_values(setup: Setup, cohort: list[Student], means: list["RunningMeans"], batch_size: int) -> dict:
    """The first student's losses and scores under plain names, its peers' as `peer<k>_…`, and how
    often the whole cohort agrees."""
    values = means[0].means() | validation_scores(setup, cohort[0].model, batch_size)
    if len(cohort) == 1:
        return values
    predictions = [predict(s.model, setup.validation.x, batch_size, setup.device).argmax(1) for s in cohort]
    for k, student in enumerate(cohort[1:], start=1):
        peer = {"loss": means[k].means()["loss"]} | validation_scores(setup, student.model, batch_size)
        values |= {f"peer{k}_{name}": value for name, value in peer.items()}
    values["mutual_agreement"] = (
        torch.stack([p == predictions[0] for p in predictions]).all(0).float().mean().item()
    )
    return values


def temperature_at(distillation: DistillationConfig, step: int, total_steps: int) -> float:
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


def epoch_summary(epoch: int, epochs: int, values: dict[str, float], run: str = "") -> str:
    parts = [f"loss {values['loss']:.4f}"]
    if "validation_accuracy" in values:
        parts.append(f"validation accuracy {values['validation_accuracy']:.2%}")
    parts.append(f"agreement with the teacher {values['validation_agreement']:.2%}")
    if "mutual_agreement" in values:
        parts.append(f"students agree on {values['mutual_agreement']:.2%}")
    return f"{run.capitalize() + ' ' if run else ''}Epoch {epoch}/{epochs}: " + ", ".join(parts)


# --- methods: which students train, and how -------------------------------------------------


@dataclass
class Candidate:
    """A trained student that may become the artifact."""

    name: str  # "student", "peer1", "generation2"
    student: Student
    series: list[dict]


def check_method(setup: Setup, job: EngineJob) -> None:
    distillation = job.distillation
    if distillation.searched and not setup.validation.labeled:
        raise DistillError(
            "labels_required",
            "temperature or alpha 'auto' picks values by validation accuracy, but the validation set has no "
            "labels: give a labeled validation file (or labeled training data), or fixed values",
        )
    if distillation.method == "born_again" and distillation.features:
        raise DistillError(
            "unsupported_combination",
            "born_again generations are taught by the previous student, which has none of the teacher's "
            "layers that `features` names: drop `features` or use method 'standard'",
        )


def distill_standard(setup: Setup, student: Student, job: EngineJob, reporter: Reporter, clock: Clock):
    return [Candidate("student", student, train_cohort(setup, [student], job, reporter, clock))]


def distill_mutual(setup: Setup, student: Student, job: EngineJob, reporter: Reporter, clock: Clock):
    """Deep mutual learning (Zhang et al. 2018), with the teacher's soft targets too when alpha > 0."""
    specs = job.distillation.peers or [job.student_architecture]
    peers = [
        build_student(setup, job, spec, job.training.seed + k, reporter) for k, spec in enumerate(specs, 1)
    ]
    reporter.event(f"Mutual learning: {len(peers) + 1} students train together")
    series = train_cohort(setup, [student, *peers], job, reporter, clock)
    return [Candidate("student", student, series)] + [
        Candidate(f"peer{k}", p, []) for k, p in enumerate(peers, 1)
    ]


def distill_born_again(setup: Setup, student: Student, job: EngineJob, reporter: Reporter, clock: Clock):
    """Born-again networks (Furlanello et al. 2018): each generation, freshly initialised, learns from
    the previous one; the first from the job's teachers."""
    generations = job.distillation.generations
    fresh = job.model_copy(update={"student_init": "random"})
    candidates, taught_by = [], setup
    for generation in range(1, generations + 1):
        if generation > 1:
            spec, seed = job.student_architecture, job.training.seed + generation - 1
            student = build_student(taught_by, fresh, spec, seed, reporter)
        teacher = "the teacher" if generation == 1 else f"generation {generation - 1}"
        reporter.event(f"Generation {generation} of {generations}, taught by {teacher}")
        run = "" if generation == 1 else f"generation{generation}"
        candidates.append(
            Candidate(
                f"generation{generation}",
                student,
                train_cohort(taught_by, [student], job, reporter, clock, run),
            )
        )
        taught_by = student_as_teacher(setup, student, job.training.batch_size)
    return candidates


def student_as_teacher(setup: Setup, student: Student, batch_size: int) -> Setup:
    student.taps.remove()
    frozen = copy.deepcopy(student.model).eval().requires_grad_(False)
    teachers = TeacherEnsemble([frozen], [1.0], "mean", [[]])
    logits = teachers.predict(setup.validation.x, batch_size, setup.device)
    return dataclasses.replace(setup, teachers=teachers, teacher_validation_logits=logits)


METHODS = {"standard": distill_standard, "mutual": distill_mutual, "born_again": distill_born_again}


def search_grid(distillation: DistillationConfig) -> list[tuple[float, float]]:
    temperatures = (
        distillation.search.temperatures if distillation.temperature == "auto" else [distillation.temperature]
    )
    alphas = distillation.search.alphas if distillation.alpha == "auto" else [distillation.alpha]
    return list(itertools.product(temperatures, alphas))


def search_hyperparameters(
    setup: Setup, job: EngineJob, reporter: Reporter, clock: Clock
) -> tuple[EngineJob, dict, list[dict]]:
    """Short trials over the grid, each a fresh student of the same seed; the best validation accuracy
    wins (the first of equals). Returns the job with the chosen values, the trials, and their series."""
    grid, distillation = search_grid(job.distillation), job.distillation
    trials, series = [], []
    for number, (temperature, alpha) in enumerate(grid, start=1):
        trial = with_values(job, temperature, alpha, epochs=distillation.search.trial_epochs)
        student = build_student(setup, trial, job.student_architecture, job.training.seed, reporter)
        series += train_cohort(setup, [student], trial, reporter, clock, f"trial{number}")
        student.taps.remove()
        logits = predict(student.model, setup.validation.x, job.training.batch_size, setup.device)
        trials.append(
            {
                "temperature": temperature,
                "alpha": alpha,
                "validation_accuracy": accuracy(logits, setup.validation.y),
            }
        )
        reporter.event(
            f"Trial {number} of {len(grid)}: T={temperature:g}, alpha={alpha:g}: "
            f"validation accuracy {trials[-1]['validation_accuracy']:.2%}"
        )
    best = max(trials, key=lambda t: t["validation_accuracy"])
    reporter.event(f"Chosen by {len(grid)} trials: T={best['temperature']:g}, alpha={best['alpha']:g}")
    chosen = with_values(job, best["temperature"], best["alpha"], epochs=job.training.epochs)
    return chosen, {"temperature": best["temperature"], "alpha": best["alpha"], "trials": trials}, series


def with_values(job: EngineJob, temperature: float, alpha: float, epochs: int) -> EngineJob:
    distillation = job.distillation.model_copy(update={"temperature": temperature, "alpha": alpha})
    training = job.training.model_copy(update={"epochs": epochs})
    return job.model_copy(update={"distillation": distillation, "training": training})


# --- finishing --------------------------------------------------------------------------------


def candidate_score(setup: Setup, logits: Tensor) -> float:
    """Validation accuracy, or agreement with the teacher where there are no labels."""
    if setup.validation.labeled:
        return accuracy(logits, setup.validation.y)
    return accuracy(logits, setup.teacher_validation_logits.argmax(dim=1))


def candidate_summary(setup: Setup, candidate: Candidate, logits: Tensor, exported: bool) -> dict:
    scores = classification_metrics(setup.teacher_validation_logits, logits, setup.validation.y)
    return {
        "name": candidate.name,
        "family": candidate.student.spec.family,
        "parameters": count_parameters(candidate.student.model),
        "accuracy": scores["student_accuracy"],
        "agreement": scores["agreement"],
        "exported": exported,
    }


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
    candidates: list[Candidate],
    job: EngineJob,
    trial_series: list[dict],
    search: dict | None,
    out_dir: Path,
    started: float,
    reporter: Reporter,
) -> DistillResult:
    batch_size = job.training.batch_size
    scored = [(c, predict(c.student.model, setup.validation.x, batch_size, setup.device)) for c in candidates]
    best, student_logits = max(scored, key=lambda pair: candidate_score(setup, pair[1]))
    student = best.student.model
    metrics = final_metrics(
        setup.teacher_validation_logits,
        student_logits,
        setup.validation.y,
        teacher_parameters=setup.teachers.parameter_count(),
        student_parameters=count_parameters(student),
    )
    if len(candidates) > 1:
        group = "generations" if job.distillation.method == "born_again" else "students"
        metrics[group] = [candidate_summary(setup, c, logits, c is best) for c, logits in scored]
        reporter.event(f"Best on the validation set: {best.name}; it is the exported student")
    if search is not None:
        metrics["search"] = search
    best.student.taps.remove()  # the exported student must carry no hooks
    example = setup.train.x[:1]
    artifacts = export_student(student, best.student.spec, example, out_dir)
    if "int8" in job.export:
        artifacts[INT8_PROGRAM] = export_int8(student, example, out_dir)
        metrics["int8"] = int8_metrics(setup, student, student_logits, artifacts, batch_size)
    series = trial_series + [point for c in candidates for point in c.series]
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
