"""Text datasets: JSON Lines files of `{"text": "...", "label": 0}`, tokenized into padded token ids.

The tokenizer is a Hugging Face `tokenizers` JSON file (never fetched from a hub). Transformers
here treat token id 0 as padding, so the tokenizer's padding token must have id 0: a tokenizer
whose pad id is another number, or that has no padding token, is rejected rather than remapped,
because a teacher trained with that tokenizer expects its ids unchanged.
"""

import json
from pathlib import Path

import numpy as np
import torch
from tokenizers import Encoding, Tokenizer

from engine.data.arrays import ArrayDataset, invalid
from engine.models.transformer import PADDING_ID
from engine.plan.errors import JobFailed
from engine.plan.specs import TransformerSpec

PAD_TOKENS = ("[PAD]", "<pad>")
RECORD_EXAMPLE = '{"text": "a sentence", "label": 0}'


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
    line_numbers, texts, labels = read_records(path)
    ids = encode(tokenizer, texts, line_numbers, max_length)
    return ArrayDataset(x=torch.from_numpy(ids), y=labels_tensor(labels, line_numbers))


def read_records(path: Path) -> tuple[list[int], list[str], list[int | None]]:
    """The line number, text and label (or None) of each non-blank line."""
    if not path.is_file():
        raise invalid(f"dataset file {path.name} does not exist")
    line_numbers, texts, labels = [], [], []
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            text, label = parse_record(raw, number)
            line_numbers.append(number)
            texts.append(text)
            labels.append(label)
    if not texts:
        raise invalid(f"{path.name} has no records: write one JSON object per line, like {RECORD_EXAMPLE}")
    return line_numbers, texts, labels


def parse_record(raw: bytes, number: int) -> tuple[str, int | None]:
    record = decode_record(raw, number)
    text = record.get("text")
    if not isinstance(text, str):
        problem = "has no 'text'" if text is None else f"has a 'text' of type {type(text).__name__}"
        raise invalid(f"line {number} {problem}: every line needs a string 'text', like {RECORD_EXAMPLE}")
    label = record.get("label")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
        raise invalid(
            f"line {number} has label {json.dumps(label)}; labels must be integer class indices (0, 1, ...), "
            "or leave 'label' out on every line for an unlabeled dataset"
        )
    return text, label


def decode_record(raw: bytes, number: int) -> dict:
    try:
        record = json.loads(raw.decode("utf-8-sig"))  # -sig: tolerate a byte-order mark on line 1
    except UnicodeDecodeError:
        raise invalid(f"line {number} is not UTF-8 text: save the file as UTF-8") from None
    except json.JSONDecodeError as error:
        raise not_json(number, f"{error.msg} at column {error.colno}") from None
    except ValueError as error:  # an integer of more than 4,300 digits
        raise not_json(number, str(error)) from None
    except RecursionError:
        raise not_json(number, "nested too deeply") from None
    if not isinstance(record, dict):
        raise invalid(f"line {number} is a JSON {type(record).__name__}, not an object like {RECORD_EXAMPLE}")
    return record


def not_json(number: int, reason: str) -> JobFailed:
    return invalid(
        f"line {number} is not valid JSON ({reason}): each line must be one JSON object, "
        f"like {RECORD_EXAMPLE}"
    )


def labels_tensor(labels: list[int | None], line_numbers: list[int]) -> torch.Tensor | None:
    missing = [number for number, label in zip(line_numbers, labels, strict=True) if label is None]
    if len(missing) == len(labels):
        return None
    if missing:
        raise invalid(
            f"{len(missing):,} of {len(labels):,} lines have no 'label' (first: line {missing[0]}) while the "
            "others do: label every line, or none for an unlabeled dataset"
        )
    return torch.tensor(labels, dtype=torch.int64)


def encode(tokenizer: Tokenizer, texts: list[str], line_numbers: list[int], max_length: int) -> np.ndarray:
    """[N, max_length] int64 ids: the tokenizer's truncation keeps its special tokens ([CLS] ... [SEP])."""
    tokenizer.no_padding()  # padded below, whatever the file configures
    tokenizer.enable_truncation(max_length)
    try:
        encodings = tokenizer.encode_batch(texts)
    except Exception:  # the Rust library raises plain Exception; find the line it failed on
        encodings = [
            encode_line(tokenizer, text, number) for text, number in zip(texts, line_numbers, strict=True)
        ]
    ids = np.full((len(texts), max_length), PADDING_ID, dtype=np.int64)
    for row, encoding in enumerate(encodings):
        sequence = encoding.ids[:max_length]
        ids[row, : len(sequence)] = sequence
    return ids


def encode_line(tokenizer: Tokenizer, text: str, number: int) -> Encoding:
    try:
        return tokenizer.encode(text)
    except Exception as error:
        raise invalid(f"the tokenizer failed on line {number}: {error}") from None
