"""A dataset as a Hugging Face (`transformers`) classifier reads it, whatever file it came in.

A text model reads token ids `[N, max_length]`: JSON Lines or Parquet text tokenized with the teacher's
tokenizer, or an `.npz` of ids made with it. An image model reads `[N, C, H, W]` floats in [0, 1]: an `.npz`
of images, or Parquet of encoded images. Labels are the teacher's: its label names or class ids.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from engine.data.arrays import ArrayDataset, check_token_ids, invalid, read_npz
from engine.data.hf_text import encode_texts, load_hf_tokenizer
from engine.data.images import check_image_channels, decode_image, model_images
from engine.data.labels import label_ids, label_names
from engine.data.parquet import column_batches, open_parquet, read_labels, row, rows_from
from engine.data.text import read_records
from engine.plan.errors import JobFailed
from engine.plan.specs import HFSpec

TEXT_BATCH_ROWS = 4096  # Parquet rows tokenized at once
IMAGE_BATCH_ROWS = 256  # Parquet rows of encoded images read at once

Labels = list[int | str] | None
Where = Callable[[int], str]  # where a sample is in its file: `line 3`, `row 2`


def load_hf_dataset(
    path: Path, format: str, spec: HFSpec, tokenizer_folder: Path | None, *, param: str | None = None
) -> ArrayDataset:
    """The samples and labels (None: unlabeled) of the dataset file at `path`, of `format` (`jsonl`,
    `parquet` or `npz`, as detected on upload), as the model `spec` reads them; `tokenizer_folder`: where
    the teacher's tokenizer is saved (text read from JSON Lines or Parquet needs it).

    Every problem with the file is a `dataset_invalid` error naming the line or row, with `param` (the
    request's field that gave the file)."""
    readers = READERS[spec.task]
    if format not in readers:
        raise JobFailed(
            "dataset_invalid",
            f"a {spec.task} model ({spec.model_type}) reads {' or '.join(readers)} datasets, not {format}",
            param=param,
        )
    try:
        x, labels, where = readers[format](path, spec, tokenizer_folder)
        names = label_names(spec.config, spec.num_classes)
        y = None if labels is None else label_ids(labels, names, spec.num_classes, where)
    except JobFailed as failed:
        failed.param = failed.param or param
        raise
    return ArrayDataset(x=torch.as_tensor(x), y=None if y is None else torch.from_numpy(y))


# --- text -------------------------------------------------------------------------------------


def text_jsonl(path: Path, spec: HFSpec, tokenizer_folder: Path | None) -> tuple[np.ndarray, Labels, Where]:
    tokenizer = load_hf_tokenizer(tokenizer_folder)
    records = read_records(path)
    ids = encode_texts(tokenizer, records.texts, records.pairs, spec.max_length, records.where)
    return within_vocabulary(ids, spec), records.labels, records.where


def text_parquet(path: Path, spec: HFSpec, tokenizer_folder: Path | None) -> tuple[np.ndarray, Labels, Where]:
    tokenizer = load_hf_tokenizer(tokenizer_folder)
    file, columns = open_parquet(path, needed="text")
    names = ["text", "text_pair"] if columns.text_pair else ["text"]
    ids = np.empty((file.metadata.num_rows, spec.max_length), dtype=np.int64)
    for start, values in column_batches(file, path, names, TEXT_BATCH_ROWS):
        texts, pairs = values["text"], values.get("text_pair")
        encoded = encode_texts(tokenizer, texts, pairs, spec.max_length, where=rows_from(start))
        ids[start : start + len(texts)] = encoded
    labels = read_labels(file, path) if columns.label else None
    return within_vocabulary(ids, spec), labels, row


def text_npz(path: Path, spec: HFSpec, _tokenizer_folder: Path | None) -> tuple[np.ndarray, Labels, Where]:
    """Token ids made with the teacher's tokenizer, padded with its padding id to the model's max_length."""
    x, y = read_npz(path)
    check_token_ids(x)
    if x.shape[1] != spec.max_length:
        raise invalid(
            f"array 'x' has {x.shape[1]} token ids per sample but the model reads max_length = "
            f"{spec.max_length}: pad (with the tokenizer's padding id) or truncate them to {spec.max_length}"
        )
    return within_vocabulary(x.astype(np.int64), spec), npz_labels(y), sample


def within_vocabulary(ids: np.ndarray, spec: HFSpec) -> np.ndarray:
    """Every id must index the model's embeddings (`vocab_size` of its config)."""
    vocab_size = spec.config.get("vocab_size")
    if vocab_size is not None and ids.max() >= vocab_size:
        raise JobFailed(
            "vocabulary_mismatch",
            f"the token ids reach {int(ids.max()):,} but the model's vocab_size is {vocab_size:,}: "
            "tokenize with the teacher's own tokenizer",
        )
    return ids


# --- images -----------------------------------------------------------------------------------


def image_npz(path: Path, spec: HFSpec, _tokenizer_folder: Path | None) -> tuple[torch.Tensor, Labels, Where]:
    check_image_channels(spec.input_shape)
    x, y = read_npz(path)
    return model_images(x, spec.input_shape), npz_labels(y), sample


def image_parquet(
    path: Path, spec: HFSpec, _tokenizer_folder: Path | None
) -> tuple[np.ndarray, Labels, Where]:
    check_image_channels(spec.input_shape)
    file, columns = open_parquet(path, needed="image")
    pixels = np.empty((file.metadata.num_rows, *spec.input_shape), dtype=np.uint8)
    for start, values in column_batches(file, path, ["image"], IMAGE_BATCH_ROWS):
        for index, data in enumerate(values["image"], start=start):
            pixels[index] = decode_image(data, spec.input_shape, row(index))
    labels = read_labels(file, path) if columns.label else None
    return scaled(pixels), labels, row


def scaled(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in [0, 1], divided in place (one float copy of the images, not two)."""
    images = pixels.astype(np.float32)
    images /= 255
    return images


# --- labels -----------------------------------------------------------------------------------


def npz_labels(y: np.ndarray | None) -> Labels:
    return None if y is None else y.tolist()


def sample(index: int) -> str:
    return f"sample {index}"


READERS = {
    "text": {"jsonl": text_jsonl, "parquet": text_parquet, "npz": text_npz},
    "image": {"npz": image_npz, "parquet": image_parquet},
}
