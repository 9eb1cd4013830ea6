"""What one job may ask of a worker, checked at submission from its specs alone (no tensor is built): the
parameters of each model, the memory its training needs at the peak, the epochs of all its runs and
the training samples they pass through the students, and the wall-clock time it may take.
Over a bound, a 422 names the field and the figures; the defaults follow the machine's memory.

The figures are `engine.plan.sizes`'; a pt2 or onnx teacher, whose architecture is not declared, counts a
parameter for every 4 bytes of its file."""

from dataclasses import dataclass

from core.config import Settings
from core.errors import unprocessable
from engine.plan.rules import learners
from engine.plan.sizes import (
    FLOAT_BYTES,
    cohort,
    device_share,
    frozen_model_bytes,
    model_epochs,
    model_training_bytes,
    parameter_count,
    trained_samples,
)
from engine.plan.specs import EngineJob


@dataclass(frozen=True)
class TeacherFile:
    field: str  # as the request names the teacher: `teacher`, `teachers.1`
    bytes: int


def check_bounds(
    job: EngineJob,
    settings: Settings,
    *,
    teachers: list[TeacherFile],
    train_samples: int | None,
    dataset_bytes: int,
) -> None:
    """`train_samples`: the training file's, None for one uploaded before samples were counted."""
    teacher_parameters = _teacher_parameters(job, teachers)
    _check_parameters(job, teacher_parameters, settings.model_parameter_limit)
    teacher_counts = [parameters for _field, parameters in teacher_parameters]
    _check_memory(job, teacher_counts, dataset_bytes, settings.job_memory_limit)
    _check_compute(job, train_samples, settings.max_job_epochs, settings.max_job_sample_epochs)
    _check_time(job, settings.max_job_seconds)


def time_bound(job: EngineJob, settings: Settings) -> float:
    """The wall-clock seconds the job may take from its claim: its own `training.max_seconds`, else the
    server's."""
    return job.training.max_seconds or settings.max_job_seconds


def _teacher_parameters(job: EngineJob, teachers: list[TeacherFile]) -> list[tuple[str, int]]:
    return [
        (f"{file.field}.architecture", parameter_count(source.architecture))
        if source.architecture is not None
        else (f"{file.field}.file_id", file.bytes // FLOAT_BYTES)
        for source, file in zip(job.teachers, teachers, strict=True)
    ]


def _check_parameters(job: EngineJob, teacher_parameters: list[tuple[str, int]], limit: int) -> None:
    students = [(field, parameter_count(spec)) for field, spec in learners(job)]
    for field, parameters in teacher_parameters + students:
        if parameters > limit:
            raise unprocessable(
                "model_too_large",
                f"{field} has {parameters:,} parameters, more than this server trains or holds in one model "
                f"({limit:,}, DISTILL_MAX_MODEL_PARAMETERS): use a smaller model.",
                param=field,
            )


def _check_memory(job: EngineJob, teacher_parameters: list[int], dataset_bytes: int, limit: int) -> None:
    training = job.training
    batch_size = device_share(training.batch_size, training.devices)  # each process holds the models whole
    lora = None if job.student_lora is None else job.student_lora.parameters  # the student's: cohort's first
    needs = {
        "the students in training": sum(
            model_training_bytes(spec, training.optimizer, batch_size, adapters=None if number else lora)
            for number, spec in enumerate(cohort(job))
        ),
        "the teachers": sum(
            frozen_model_bytes(parameters, source.architecture, batch_size)
            for source, parameters in zip(job.teachers, teacher_parameters, strict=True)
        ),
        "the datasets": dataset_bytes,
    }
    if job.distillation.method == "born_again":  # each generation is taught by a frozen copy of the last
        needs["the generation teaching the next"] = FLOAT_BYTES * parameter_count(job.student_architecture)
    total = sum(needs.values())
    if total > limit:
        parts = ", ".join(f"{what} {_gib(size)}" for what, size in needs.items())
        raise unprocessable(
            "memory_exceeded",
            f"Training this job needs about {_gib(total)} of memory ({parts}), more than a worker here gives "
            f"one job ({_gib(limit)}, DISTILL_MAX_JOB_MEMORY_BYTES): lower training.batch_size, or use "
            "smaller models.",
            param="training.batch_size",
        )


def _check_compute(job: EngineJob, train_samples: int | None, epoch_limit: int, sample_limit: int) -> None:
    epochs = model_epochs(job)
    what = (
        f"This job trains {epochs:,} model-epochs in all (its epochs, times the generations or the models "
        "of a cohort, plus the epochs of every `auto` trial)"
    )
    change = "lower training.epochs or distillation.search.budget_epochs"
    if epochs > epoch_limit:
        raise unprocessable(
            "too_many_epochs",
            f"{what}, more than this server runs for one job ({epoch_limit:,}, DISTILL_MAX_JOB_EPOCHS): "
            f"{change}.",
            param="training.epochs",
        )
    if train_samples is None:
        return
    samples = trained_samples(job, train_samples)
    if samples * epochs > sample_limit:
        of, fewer = "", "train on fewer samples"
        if samples != train_samples:
            of = f" (the teacher's completions of {train_samples:,})"
            fewer = "ask for fewer distillation.sequence_level.samples_per_prompt"
        raise unprocessable(
            "too_many_epochs",
            f"{what} over {samples:,} training samples{of}: {samples * epochs:,} sample-epochs, more "
            f"than this server runs for one job ({sample_limit:,}, DISTILL_MAX_JOB_SAMPLE_EPOCHS): {change}, "
            f"or {fewer}.",
            param="training.epochs",
        )


def _check_time(job: EngineJob, limit: float) -> None:
    asked = job.training.max_seconds
    if asked is not None and asked > limit:
        raise unprocessable(
            "max_seconds_too_large",
            f"training.max_seconds asks for {asked:,g} s, more than this server gives one job ({limit:,g} s, "
            "DISTILL_MAX_JOB_SECONDS): ask for less, or leave it out to get that.",
            param="training.max_seconds",
        )


def _gib(size: int) -> str:
    return f"{size / 1024**3:.3g} GiB"
