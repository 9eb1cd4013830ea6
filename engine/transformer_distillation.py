"""What a job with a transformer student adds to the pipeline: token-id datasets (an .npz archive, or
JSON Lines text with a tokenizer), the tokenizer's vocabulary checks, and TinyBERT layer distillation
against the first teacher (`distillation.transformer`)."""

import zipfile
from pathlib import Path

from torch import nn
from torch.nn import functional as F

from engine.data import ArrayDataset, load_npz
from engine.errors import DistillError
from engine.hooks import LayerTaps
from engine.layer_map import check_layer_map
from engine.objective import TransformerTerm
from engine.reporting import Reporter
from engine.specs import ArchitectureSpec, EngineJob, TransformerSpec
from engine.text_data import check_vocabulary, load_jsonl, load_tokenizer, vocabulary_size
from engine.tinybert import TinyBertLoss
from engine.transformer import PADDING_ID, capture_points

# --- data -------------------------------------------------------------------------------------


def load_dataset(path: Path, spec: ArchitectureSpec | None, tokenizer_path: Path | None) -> ArrayDataset:
    """Features from an .npz archive; for a transformer student, token ids: from an .npz archive, or
    JSON Lines text tokenized with `tokenizer_path`, truncated and padded to the student's max_length."""
    if spec is None or spec.family != "transformer":
        return load_npz(path)
    if not path.is_file() or zipfile.is_zipfile(path):
        return load_npz(path, token_ids=True)
    if tokenizer_path is None:
        raise DistillError(
            "tokenizer_required",
            f"{path.name} is not an .npz archive, so it is read as JSON Lines text, which needs the "
            "tokenizer the models were trained with: give dataset.tokenizer_file_id (a `tokenizer` file)",
        )
    return load_jsonl(path, tokenizer_path, spec.max_length)


def common_length(train: ArrayDataset, validation: ArrayDataset) -> tuple[ArrayDataset, ArrayDataset]:
    """Token ids of two lengths, the shorter padded with 0 (padding, which a transformer ignores)."""
    if train.x.ndim != 2 or validation.x.ndim != 2 or train.x.is_floating_point():
        return train, validation
    length = max(train.x.shape[1], validation.x.shape[1])
    return padded(train, length), padded(validation, length)


def padded(dataset: ArrayDataset, length: int) -> ArrayDataset:
    extra = length - dataset.x.shape[1]
    if extra <= 0:
        return dataset
    return ArrayDataset(F.pad(dataset.x, (0, extra), value=PADDING_ID), dataset.y)


def check_tokenizer(job: EngineJob, tokenizer_path: Path, reporter: Reporter) -> None:
    """Every id the tokenizer produces must index the embeddings of the student and of each transformer
    teacher whose architecture is known: `vocabulary_mismatch` otherwise."""
    size = vocabulary_size(load_tokenizer(tokenizer_path))
    models = [("student", job.student_architecture)]
    for index, teacher in enumerate(job.teachers):
        models.append(("teacher" if len(job.teachers) == 1 else f"teacher {index}", teacher.architecture))
    for name, spec in models:
        if spec is not None and spec.family == "transformer":
            check_vocabulary(size, spec, name)
    reporter.event(f"Tokenizer: {size:,} token ids")


# --- TinyBERT ---------------------------------------------------------------------------------


def capture_paths(spec: TransformerSpec) -> list[str]:
    """The module paths TinyBERT reads: the embeddings, and each layer's output and attention."""
    points = capture_points(spec)
    return [points["embeddings"], *points["hidden"], *points["attention"]]


def check_transformer_distillation(job: EngineJob) -> None:
    """TinyBERT needs a transformer student, a first teacher that is a transformer of known architecture,
    and a layer map that fits both: checked before any file is read."""
    distillation = job.distillation
    if distillation.transformer is None:
        return
    student, teacher = job.student_architecture, job.teachers[0].architecture
    if student.family != "transformer":
        raise DistillError(
            "transformer_required",
            f"distillation.transformer (TinyBERT) matches transformer layers, but the student is a "
            f"{student.family} model: use a transformer student, or drop distillation.transformer",
        )
    if teacher is None or teacher.family != "transformer":
        what = "a pt2 program of undeclared architecture" if teacher is None else f"a {teacher.family} model"
        raise DistillError(
            "transformer_required",
            f"distillation.transformer (TinyBERT) reads the layers of the first teacher, which is {what}: "
            "make the first teacher a safetensors transformer with its architecture",
        )
    if distillation.transformer.layer_map is not None:
        check_layer_map(distillation.transformer.layer_map, student.num_layers, teacher.num_layers)
    if distillation.method == "born_again":
        raise DistillError(
            "unsupported_combination",
            "born_again generations are taught by the previous student, which has none of the teacher's "
            "layers that distillation.transformer (TinyBERT) reads: drop it or use another method",
        )


def uses_tinybert(job: EngineJob, spec: ArchitectureSpec) -> bool:
    return job.distillation.transformer is not None and spec.family == "transformer"


def student_layer_taps(job: EngineJob, model: nn.Module, spec: ArchitectureSpec) -> LayerTaps:
    """The student's layers that feature pairs and TinyBERT read; for TinyBERT also its input ids,
    whose zeros are the padding left out of the TinyBERT losses."""
    paths = [pair.student for pair in job.distillation.features]
    tinybert = uses_tinybert(job, spec)
    if tinybert:
        paths += capture_paths(spec)
    return LayerTaps(model, paths, "student", record_input=tinybert)


def transformer_term(job: EngineJob, spec: ArchitectureSpec, taps: LayerTaps) -> TransformerTerm | None:
    """TinyBERT between a transformer student of `spec` and the first teacher, or None.

    A `mutual` peer of other depth than the student, which `layer_map` does not fit, gets the uniform
    map; a peer of another family gets no TinyBERT term.
    """
    config = job.distillation.transformer
    if config is None or not uses_tinybert(job, spec):
        return None
    layer_map = config.layer_map
    if layer_map is not None and len(layer_map) != spec.num_layers:
        layer_map = None
    loss = TinyBertLoss(
        spec,
        job.teachers[0].architecture,
        layer_map,
        embedding_weight=config.embedding_weight,
        hidden_weight=config.hidden_weight,
        attention_weight=config.attention_weight,
    )
    return TransformerTerm(loss, taps)
