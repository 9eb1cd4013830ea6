"""Phase "validating" of a causal language model's job: its text tokenized into blocks by the teacher folder's
tokenizer, the teacher loaded and measured on the validation blocks, its top-k form over them read from the
teacher cache (or computed and kept). Everything that can fail cheaply fails here, before the first step."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.data.arrays import split_holdout
from engine.data.datasets import file_format
from engine.data.lm_text import LMDataset, load_lm_dataset
from engine.evaluate import BlockTeacher, LiveTeacher, head_of, token_scores
from engine.models.hooks import LayerTaps
from engine.models.registry import count_parameters
from engine.plan.rules import check_job
from engine.plan.specs import EngineJob, JobFiles
from engine.reporting import Reporter
from engine.runtime.compute import Precision, configure
from engine.runtime.distributed import ONE_PROCESS, Ranks
from engine.teachers.cache import TeacherCache, TeacherCacheStore
from engine.teachers.lm_cache import bypass_reason, cached_top_k, read_top_k
from engine.teachers.loading import load_teacher


@dataclass
class LMSetup:
    """Everything validated and in place for training a causal language model."""

    device: torch.device
    train: LMDataset  # on the CPU: each step takes its blocks to the device
    validation: LMDataset
    teacher: nn.Module  # `HFCausalLM`, frozen, on the device
    teacher_scores: dict[str, float]  # `token_scores` of the teacher on the validation blocks
    precision: Precision  # the training steps'
    tokenizer_folder: Path  # the teacher's folder, whose tokenizer the student keeps
    top_k: int | None  # the teacher's tokens read at each position (`distillation.top_k`); None: all
    cache: TeacherCache  # whether the teacher's top-k tables serve, and what they cost and saved
    training_teacher: BlockTeacher  # the teacher over `train` as the losses read it: run, or from its table
    validation_teacher: BlockTeacher  # the same over `validation`, for the per-epoch scores
    teacher_taps: LayerTaps  # the teacher's layers that feature pairs read, at each run of it
    ranks: Ranks = ONE_PROCESS


def prepare_language_model(
    job: EngineJob,
    files: JobFiles,
    device: torch.device,
    reporter: Reporter,
    ranks: Ranks = ONE_PROCESS,
    *,
    folder: Path,
    cache_store: TeacherCacheStore | None = None,
) -> LMSetup:
    """The job checked, its blocks and teacher loaded; `folder`: where the teacher's top-k tables may be
    written for the job's run, `cache_store`: where they are kept for later jobs."""
    check_job(job)  # before any file is read
    reporter.event(
        f"Device: {device}" if ranks.size == 1 else f"Devices: {ranks.size} processes on {device.type}"
    )
    teacher_folder, source = files.teachers[0], job.teachers[0]
    train, validation = load_blocks(job, files, reporter)
    teacher = load_teacher(teacher_folder, source.format, source.architecture).to(device)
    reporter.event(f"Teacher loaded ({source.format}): {count_parameters(teacher):,} parameters")
    teacher_taps = LayerTaps(teacher, [pair.teacher for pair in job.distillation.features], "teacher")
    precision = configure(device, job.training)
    scores = token_scores(teacher, LiveTeacher(teacher), validation, job.training.batch_size, device)
    reporter.event(
        f"Teacher validation perplexity {scores['perplexity']:.3f}, next-token accuracy "
        f"{scores['accuracy']:.2%} over {scores['tokens']:,} tokens"
    )
    top_k = read_top_k(job.distillation.top_k, vocabulary=len(head_of(teacher).weight))
    reporter.event(top_k_line(job.distillation.top_k, top_k))
    cache = TeacherCache(job, files, cache_store, folder, precision, reporter)
    cache.decide(bypass_reason(cache, top_k, train, validation))
    live = LiveTeacher(teacher, top_k)
    validation_teacher = cached_top_k(cache, teacher, "validation", validation, top_k) if cache.used else live
    return LMSetup(
        device,
        train,
        validation,
        teacher,
        scores,
        precision=precision,
        tokenizer_folder=teacher_folder,
        top_k=top_k,
        cache=cache,
        training_teacher=live,
        validation_teacher=validation_teacher,
        teacher_taps=teacher_taps,
        ranks=ranks,
    )


def load_blocks(job: EngineJob, files: JobFiles, reporter: Reporter) -> tuple[LMDataset, LMDataset]:
    """(train, validation) blocks of the student's max_length tokens: the validation file's, or a seeded
    hold-out of the training file's."""
    config, length = job.training, job.student_architecture.max_length

    def blocks(path: Path, param: str) -> LMDataset:
        return load_lm_dataset(
            path,
            file_format(path),
            files.teachers[0],
            max_length=length,
            packing=job.text.packing,
            truncation=job.text.truncation,
            param=param,
        )

    train = blocks(files.train, "dataset.train_file_id")
    if files.validation is not None:
        validation = blocks(files.validation, "dataset.validation_file_id")
        source = "from the validation file"
    else:
        train, validation = split_holdout(train, config.validation_fraction, config.seed)
        source = f"held out from the training file ({config.validation_fraction:.0%}, seed {config.seed})"
    reporter.event(
        f"Dataset: {len(train):,} training blocks of {length} tokens ({train.counted_tokens():,} tokens "
        f"learnt), {len(validation):,} validation blocks {source} ({validation.counted_tokens():,} tokens)"
    )
    return train, validation


def with_cached_tokens(setup: LMSetup, job: EngineJob) -> LMSetup:
    """The setup reading the teacher over the training blocks from its table, where the cache serves and the
    training reads the teacher."""
    if not setup.cache.used or not reads_teacher(job):
        return setup
    table = cached_top_k(setup.cache, setup.teacher, "train", setup.train, setup.top_k)
    return dataclasses.replace(setup, training_teacher=table)


def reads_teacher(job: EngineJob) -> bool:
    """Whether the training steps on the dataset's blocks read the teacher: not where `alpha` is 0 and no
    feature pair reads its layers (the student trained alone, or its reference), whose steps cost what plain
    fine-tuning costs."""
    return job.distillation.alpha != 0 or bool(job.distillation.features)


def top_k_line(requested: int | None, top_k: int | None) -> str:
    """How the teacher's next-token distributions are read (`distillation.top_k`)."""
    if top_k is None:
        return "The teacher is read over its whole vocabulary at each position (distillation.top_k null)."
    whole = f" (top_k {requested:,} is more than the vocabulary's {top_k:,})" if top_k < requested else ""
    return (
        f"The teacher is read as its top {top_k:,} tokens at each position{whole} and the rest of the "
        "vocabulary as one outcome."
    )
