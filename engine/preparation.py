"""Phase "validating": the job's rules, then its data and teachers, loaded and checked. Everything that
can fail cheaply fails here, in seconds, with an error that says what to change."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from engine.checks import (
    check_batch_norm_batches,
    check_labels,
    check_student_input,
    check_teacher_logits,
    probe_teacher,
    teacher_rejections,
)
from engine.data.arrays import ArrayDataset
from engine.data.augment import check_augmentation
from engine.data.datasets import check_tokenizer, load_datasets
from engine.evaluate import accuracy
from engine.losses.tinybert import capture_paths
from engine.models.registry import count_parameters
from engine.plan.rules import check_job, learners
from engine.plan.sizes import device_share
from engine.plan.specs import EngineJob, JobFiles
from engine.reporting import Reporter
from engine.runtime.compute import Precision, configure, memory_format
from engine.runtime.devices import placed_dataset
from engine.runtime.distributed import ONE_PROCESS, Ranks
from engine.teachers.cache import CachedTeachers, TeacherCache, TeacherCacheStore
from engine.teachers.ensemble import TeacherBatch, TeacherEnsemble
from engine.teachers.loading import load_teacher


@dataclass
class Setup:
    """Everything validated and in place for training."""

    device: torch.device
    train: ArrayDataset
    validation: ArrayDataset
    teachers: TeacherEnsemble
    teacher_validation_logits: Tensor  # computed once: the teachers are frozen
    cache: TeacherCache
    precision: Precision  # the training steps'
    cached: CachedTeachers | None = None  # the teachers' outputs over `train`, where the cache serves them
    tokenizer_folder: Path | None = None  # an `hf` teacher's folder, whose tokenizer a text student keeps
    ranks: Ranks = ONE_PROCESS  # the processes training together, and this one's place among them

    def teacher_batch(self, x: Tensor, index: slice | Tensor, generator: torch.Generator) -> TeacherBatch:
        """The teachers' outputs on the training samples `x` at positions `index`."""
        if self.cached is None:
            return self.teachers(x, generator)
        return self.cached(index, generator)


def prepare(
    job: EngineJob,
    files: JobFiles,
    device: torch.device,
    reporter: Reporter,
    folder: Path,
    cache_store: TeacherCacheStore | None = None,
    ranks: Ranks = ONE_PROCESS,
) -> Setup:
    """The job checked, its data and teachers loaded; `folder`: where the teachers' outputs may be written
    for the job's run; `ranks`: the processes the job trains on (each checks the batches it will take)."""
    check_job(job)  # before any file is read
    several = f"Devices: {ranks.size} processes on {device.type}"
    reporter.event(f"Device: {device}" if ranks.size == 1 else several)
    batch_size = job.training.batch_size
    if files.tokenizer is not None:
        check_tokenizer(job, files.tokenizer, reporter)
    train, validation = load_datasets(job, files, reporter)
    for field, model in learners(job):
        check_student_input(model, train, field)
        check_student_input(model, validation, field)
        check_batch_norm_batches(
            model, device_share(len(train), ranks.size), device_share(batch_size, ranks.size), field
        )
    check_augmentation(job.training.augmentation, list(train.x.shape[1:]))
    train = placed_dataset(train, device)  # read at every step; the validation set once an epoch

    precision = configure(device, job.training)
    teachers = load_teachers(job, files, train, device, reporter)
    check_labels(train, validation, job, reporter)  # after the teachers: a wrong num_classes is likelier
    cache = TeacherCache(job, files, cache_store, folder, precision, reporter)
    cache.decide(cache.bypass_reason(teachers, train, validation))
    if cache.used:
        teacher_validation_logits = cache.teachers(teachers, "validation", validation).log_probabilities(
            batch_size
        )
    else:
        with teacher_rejections(validation.x[:batch_size]):
            teacher_validation_logits = teachers.predict(validation.x, batch_size, device)
    check_teacher_logits(teacher_validation_logits, validation.x)
    if validation.labeled:
        who = "Teacher" if len(teachers) == 1 else "Teacher ensemble"
        reporter.event(f"{who} validation accuracy: {accuracy(teacher_validation_logits, validation.y):.2%}")

    return Setup(
        device,
        train,
        validation,
        teachers,
        teacher_validation_logits,
        cache,
        precision,
        ranks=ranks,
        tokenizer_folder=files.teachers[0] if job.teachers[0].format == "hf" else None,
    )


def with_cached_outputs(setup: Setup) -> Setup:
    """The setup reading the teachers' outputs over the training set from the cache, where it serves them."""
    if not setup.cache.used:
        return setup
    return dataclasses.replace(setup, cached=setup.cache.teachers(setup.teachers, "train", setup.train))


def load_teachers(
    job: EngineJob, files: JobFiles, train: ArrayDataset, device: torch.device, reporter: Reporter
) -> TeacherEnsemble:
    layer_paths = teacher_layer_paths(job)
    models = []
    for number, (source, path) in enumerate(zip(job.teachers, files.teachers, strict=True), start=1):
        teacher = load_teacher(path, source.format, source.architecture, layer_paths[number - 1])
        teacher = teacher.to(device, memory_format=memory_format(source.architecture, device))
        name = "Teacher" if len(job.teachers) == 1 else f"Teacher {number} of {len(job.teachers)}"
        reporter.event(f"{name} loaded ({source.format}): {count_parameters(teacher):,} parameters")
        probe_teacher(teacher, train, job.training.batch_size, job.student_architecture.num_classes, device)
        models.append(teacher)
    weights = [source.weight for source in job.teachers]
    return TeacherEnsemble(models, weights, job.distillation.ensemble, layer_paths)


def teacher_layer_paths(job: EngineJob) -> list[list[str]]:
    """The layers the job reads from each teacher: feature pairs' and TinyBERT's."""
    features = job.distillation.features
    paths = [[p.teacher for p in features if p.teacher_index == i] for i in range(len(job.teachers))]
    if job.distillation.transformer is not None:
        paths[0] += capture_paths(job.teachers[0].architecture)
    return paths
