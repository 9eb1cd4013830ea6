"""A job's training and validation sets, read as its student reads them: features from .npz archives; for
a transformer token ids, from .npz archives or JSON Lines text tokenized with the job's tokenizer, whose
vocabulary must fit every transformer of the job; for a transformers (`hf`) model what its task reads, text
tokenized by the `hf` teacher folder's own tokenizer."""

import zipfile
from pathlib import Path

from torch.nn import functional as F

from engine.data.arrays import ArrayDataset, load_npz, split_holdout
from engine.data.hf_datasets import load_hf_dataset
from engine.data.text import check_vocabulary, load_jsonl, load_tokenizer, vocabulary_size
from engine.models.transformer import PADDING_ID
from engine.plan.errors import JobFailed
from engine.plan.specs import ArchitectureSpec, EngineJob, HFSpec, JobFiles
from engine.reporting import Reporter


def load_datasets(job: EngineJob, files: JobFiles, reporter: Reporter) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, validation): the validation file, or a seeded hold-out of the training file."""
    student, config = job.student_architecture, job.training
    tokenizer = text_tokenizer(job, files)
    train = load_dataset(files.train, student, tokenizer, "dataset.train_file_id")
    if files.validation is not None:
        validation = load_dataset(files.validation, student, tokenizer, "dataset.validation_file_id")
        source = "from the validation file"
        if student.family == "transformer":
            train, validation = common_length(train, validation)
    else:
        train, validation = split_holdout(train, config.validation_fraction, config.seed)
        source = f"held out from the training file ({config.validation_fraction:.0%}, seed {config.seed})"
    if validation.x.shape[1:] != train.x.shape[1:]:
        raise JobFailed(
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


def text_tokenizer(job: EngineJob, files: JobFiles) -> Path | None:
    """Where the tokenizer that the job's text is read with is: an `hf` first teacher's folder (its own
    tokenizer), else the job's tokenizer file (None: there is none)."""
    return files.teachers[0] if job.teachers[0].format == "hf" else files.tokenizer


def load_dataset(
    path: Path, student: ArchitectureSpec, tokenizer_path: Path | None, param: str | None = None
) -> ArrayDataset:
    """Features from an .npz archive; for a transformer student, token ids: from an .npz archive, or
    JSON Lines text tokenized with `tokenizer_path`, truncated and padded to the student's max_length; for
    a transformers student, its task's data (`tokenizer_path`: the folder of the tokenizer)."""
    if isinstance(student, HFSpec):
        return load_hf_dataset(path, file_format(path), student, tokenizer_path, param=param)
    if student.family != "transformer":
        return load_npz(path)
    if not path.is_file() or zipfile.is_zipfile(path):
        return load_npz(path, token_ids=True)
    if tokenizer_path is None:
        raise JobFailed(
            "tokenizer_required",
            f"{path.name} is not an .npz archive, so it is read as JSON Lines text, which needs the "
            "tokenizer the models were trained with: give dataset.tokenizer_file_id (a `tokenizer` file)",
        )
    return load_jsonl(path, tokenizer_path, student.max_length)


def file_format(path: Path) -> str:
    """The dataset format the upload check detected, from the file's first bytes."""
    if zipfile.is_zipfile(path):
        return "npz"
    with path.open("rb") as stream:
        return "parquet" if stream.read(4) == b"PAR1" else "jsonl"


def common_length(train: ArrayDataset, validation: ArrayDataset) -> tuple[ArrayDataset, ArrayDataset]:
    """Token ids of two lengths, the shorter padded with 0 (padding, which a transformer ignores)."""
    length = max(train.x.shape[1], validation.x.shape[1])
    return padded(train, length), padded(validation, length)


def padded(dataset: ArrayDataset, length: int) -> ArrayDataset:
    extra = length - dataset.x.shape[1]
    if extra <= 0:
        return dataset
    return ArrayDataset(F.pad(dataset.x, (0, extra), value=PADDING_ID), dataset.y)


def check_tokenizer(job: EngineJob, tokenizer_path: Path, reporter: Reporter) -> None:
    """Every id the tokenizer produces must index the embeddings of the student, its peers and each
    transformer teacher whose architecture is known: `vocabulary_mismatch` otherwise."""
    size = vocabulary_size(load_tokenizer(tokenizer_path))
    models = [("student", job.student_architecture)]
    models += [(f"peer {number}", peer) for number, peer in enumerate(job.distillation.peers, start=1)]
    for index, teacher in enumerate(job.teachers):
        models.append(("teacher" if len(job.teachers) == 1 else f"teacher {index}", teacher.architecture))
    for name, spec in models:
        if spec is not None and spec.family == "transformer":
            check_vocabulary(size, spec, name)
    reporter.event(f"Tokenizer: {size:,} token ids")
