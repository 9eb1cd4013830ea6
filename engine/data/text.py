"""Text datasets: JSON Lines files of `{"text": "...", "label": 0}` (and `"text_pair"` for pairs of texts),
tokenized into padded token ids.

The tokenizer is a Hugging Face `tokenizers` JSON file (never fetched from a hub). Transformers
here treat token id 0 as padding, so the tokenizer's padding token must have id 0: a tokenizer
whose pad id is another number, or that has no padding token, is rejected rather than remapped,
because a teacher trained with that tokenizer expects its ids unchanged.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Encoding, Tokenizer

from engine.data.arrays import ArrayDataset, invalid
from engine.models.transformer import PADDING_ID
from engine.plan.errors import JobFailed
from engine.plan.records import RecordChecks, RecordRejected
from engine.plan.specs import TransformerSpec

PAD_TOKENS = ("[PAD]", "<pad>")


def tokenizer_invalid(message: str) -> JobFailed:
    return JobFailed("tokenizer_invalid", message)


# --- tokenizer --------------------------------------------------------------------------------


def load_tokenizer(path: Path) -> Tokenizer:
    """A `tokenizers` JSON file whose padding token has id 0."""
    if not path.is_file():
        raise tokenizer_invalid(f"tokenizer file {path.name} does not exist")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust library raises plain Exception
        raise tokenizer_invalid(
            f"{path.name} could not be loaded as a Hugging Face `tokenizers` JSON file "
            f"(save it with tokenizer.save(path)): {error}"
        ) from None
    check_padding_id(tokenizer)
    return tokenizer


def padding_id(tokenizer: Tokenizer) -> int | None:
    """The id of the padding token: from the padding configuration, else the `[PAD]`/`<pad>` token."""
    if tokenizer.padding is not None:
        return tokenizer.padding["pad_id"]
    ids = (tokenizer.token_to_id(token) for token in PAD_TOKENS)
    return next((token_id for token_id in ids if token_id is not None), None)


def check_padding_id(tokenizer: Tokenizer) -> None:
    pad_id = padding_id(tokenizer)
    if pad_id is None:
        raise tokenizer_invalid(
            f"the tokenizer has no padding token ({' or '.join(PAD_TOKENS)}) and no padding configuration; "
            "the transformer reads token id 0 as padding, so add a padding token with id 0 "
            "(e.g. list '[PAD]' first in the trainer's special_tokens)"
        )
    if pad_id != PADDING_ID:
        raise tokenizer_invalid(
            f"the tokenizer's padding token has id {pad_id}, but the transformer reads token id 0 as "
            "padding: use a tokenizer whose padding token has id 0 (e.g. list '[PAD]' first in the "
            "trainer's special_tokens)"
        )


def vocabulary_size(tokenizer: Tokenizer) -> int:
    """One more than the largest id the tokenizer can produce, added tokens included."""
    return max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1


def check_vocabulary(tokenizer_vocab_size: int, spec: TransformerSpec, name: str = "student") -> None:
    """Every id the tokenizer produces must index the model's embedding table."""
    if tokenizer_vocab_size > spec.vocab_size:
        raise JobFailed(
            "vocabulary_mismatch",
            f"the tokenizer has {tokenizer_vocab_size:,} token ids but the {name}'s vocab_size is "
            f"{spec.vocab_size:,}, so ids from {spec.vocab_size:,} up would be out of range: set "
            f"vocab_size to at least {tokenizer_vocab_size:,} or use the tokenizer the model was built for",
        )


# --- dataset ----------------------------------------------------------------------------------


def load_jsonl(path: Path, tokenizer_path: Path, max_length: int) -> ArrayDataset:
    """Token ids [N, max_length] (truncated, padded with 0) and labels, or None if no line has one.

    Blank lines are skipped; a `"label": null` counts as no label. Every problem is a
    `dataset_invalid` error naming the line, or `tokenizer_invalid`.
    """
    tokenizer = load_tokenizer(tokenizer_path)
    records = read_records(path)
    ids = encode(tokenizer, records, max_length)
    return ArrayDataset(x=torch.from_numpy(ids), y=class_ids(records))


@dataclass
class TextRecords:
    """A text file's records, in order: each one's line number, text, pair's second text and label."""

    lines: list[int]
    texts: list[str]
    pairs: list[str] | None  # None: no record has a `text_pair`
    labels: list[int | str] | None  # None: an unlabeled dataset

    def where(self, index: int) -> str:
        return f"line {self.lines[index]}"


def read_records(path: Path) -> TextRecords:
    """The records of the non-blank lines (each optional field on all of them or on none)."""
    if not path.is_file():
        raise invalid(f"dataset file {path.name} does not exist")
    checks = RecordChecks(file=path.name)
    lines, records = [], []
    try:
        with path.open("rb") as file:
            for number, line in enumerate(file, start=1):
                record = checks.read(line, number)
                if record is not None:
                    lines.append(number)
                    records.append(record)
        checks.finish()
    except RecordRejected as rejected:
        raise invalid(str(rejected)) from None
    texts, labels, pairs = (list(field) for field in zip(*records, strict=True))
    return TextRecords(
        lines=lines,
        texts=texts,
        pairs=None if pairs[0] is None else pairs,
        labels=None if labels[0] is None else labels,
    )


def class_ids(records: TextRecords) -> torch.Tensor | None:
    """The labels as class ids, or None for an unlabeled dataset; a label name is refused: only a model
    whose config names its labels (a Hugging Face one) maps names to ids."""
    if records.labels is None:
        return None
    for index, label in enumerate(records.labels):
        if isinstance(label, str):
            raise invalid(
                f"{records.where(index).capitalize()} has `label` {json.dumps(label)}, a label name: this "
                "student takes integer class ids (0, 1, ...); names are read only for a Hugging Face model, "
                "whose config names its labels"
            )
    return torch.tensor(records.labels, dtype=torch.int64)


def encode(tokenizer: Tokenizer, records: TextRecords, max_length: int) -> np.ndarray:
    """[N, max_length] int64 ids: the tokenizer's truncation keeps its special tokens ([CLS] ... [SEP])."""
    tokenizer.no_padding()  # padded below, whatever the file configures
    tokenizer.enable_truncation(max_length)
    inputs = records.texts if records.pairs is None else list(zip(records.texts, records.pairs, strict=True))
    try:
        encodings = tokenizer.encode_batch(inputs)
    except Exception:  # the Rust library raises plain Exception; find the line it failed on
        encodings = [encode_line(tokenizer, text, records.where(index)) for index, text in enumerate(inputs)]
    ids = np.full((len(inputs), max_length), PADDING_ID, dtype=np.int64)
    for row, encoding in enumerate(encodings):
        sequence = encoding.ids[:max_length]
        ids[row, : len(sequence)] = sequence
    return ids


def encode_line(tokenizer: Tokenizer, text: str | tuple[str, str], where: str) -> Encoding:
    try:
        return tokenizer.encode(*text) if isinstance(text, tuple) else tokenizer.encode(text)
    except Exception as error:
        raise invalid(f"the tokenizer failed on {where}: {error}") from None
