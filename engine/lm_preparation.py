"""Phase "validating" of a causal language model's job: its text tokenized into blocks by the teacher folder's
tokenizer, the teacher loaded and measured on the validation blocks. Everything that can fail cheaply fails
here, before the first step."""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.data.arrays import split_holdout
from engine.data.datasets import file_format
from engine.data.lm_text import LMDataset, load_lm_dataset
from engine.evaluate import token_scores
from engine.models.registry import count_parameters
from engine.plan.rules import check_job
from engine.plan.specs import EngineJob, JobFiles
from engine.reporting import Reporter
from engine.runtime.compute import Precision, configure
from engine.runtime.distributed import ONE_PROCESS, Ranks
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
    ranks: Ranks = ONE_PROCESS


def prepare_language_model(
    job: EngineJob, files: JobFiles, device: torch.device, reporter: Reporter, ranks: Ranks = ONE_PROCESS
) -> LMSetup:
    check_job(job)  # before any file is read
    reporter.event(
        f"Device: {device}" if ranks.size == 1 else f"Devices: {ranks.size} processes on {device.type}"
    )
    folder, source = files.teachers[0], job.teachers[0]
    train, validation = load_blocks(job, files, reporter)
    teacher = load_teacher(folder, source.format, source.architecture).to(device)
    reporter.event(f"Teacher loaded ({source.format}): {count_parameters(teacher):,} parameters")
    scores = token_scores(teacher, teacher, validation, job.training.batch_size, device)
    reporter.event(
        f"Teacher validation perplexity {scores['perplexity']:.3f}, next-token accuracy "
        f"{scores['accuracy']:.2%} over {scores['tokens']:,} tokens"
    )
    return LMSetup(
        device,
        train,
        validation,
        teacher,
        scores,
        precision=configure(device, job.training),
        tokenizer_folder=folder,
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
