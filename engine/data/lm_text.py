"""A causal language model's dataset: JSON Lines or Parquet records (`text`, `prompt` + `completion`, or chat
`messages`: `engine.plan.lm_records`) tokenized by the teacher's own tokenizer into blocks of `max_length`
tokens: ids, labels and an attention mask, each `[N, max_length]` int64.

**The labels are shifted here.** `labels[n, t]` is the id of the token at `t + 1`, the one the model predicts
at position `t`, or `IGNORE_INDEX` where that token does not count: padding, past the end of a sample, a
prompt's token, a conversation's token outside the assistant's turns. The losses
(`engine.losses.token_level`) read them position by position as they are, and shift nothing. A block's last
position is labelled with the next block's first token where the two go on with one text (packed samples, a
`text` cut into blocks), so no token goes unlearnt.

What is learnt:
- `text`: every token of the text as the tokenizer encodes it (with its BOS, for a tokenizer that adds one),
  and the tokenizer's EOS, appended where it has one.
- `prompt` + `completion`: the completion's tokens and the EOS. The prompt is tokenized alone, with the
  tokenizer's special tokens, then the completion without them: the completion's tokens are the ones the model
  writes after the prompt's at generation (a completion that goes on after a word starts with its space).
- `messages`: the conversation as the tokenizer's chat template renders it, the assistant's turns learnt. A
  turn is found by rendering the conversation before it with the generation prompt and the conversation
  through it: what the second adds to the first is the turn as the model writes it, up to and with the
  template's end-of-turn marker. Both must be where the whole conversation's rendering starts (a template that
  renders earlier turns differently once later ones follow cannot be read so: `chat_template_unsupported`).
  Works with any template, `{% generation %}` tags or not. Each stretch between turn boundaries is tokenized
  alone, without added special tokens (the template writes them), as `apply_chat_template` tokenizes.

**Packing**, the default for `text` only, joins the samples, each ending with the EOS (where the tokenizer has
one), into one stream cut into blocks, the last one padded, as nanoGPT and transformers' `run_clm`
(`group_texts`) do: attention runs across the samples in a block, as there. Prompts and conversations are not
packed by default: packed, a completion would read unrelated samples before its prompt, and one cut at a
block's end would be learnt without it. Unpacked, each sample starts a block: a `text` longer than max_length
goes on in the next block; a prompt and completion or a conversation longer than max_length is an error naming
its record and token count, unless `truncation` is `left` (keep its last max_length tokens) or `right` (its
first).

**Padding** is the tokenizer's padding id, else its EOS (llama's and gpt2's tokenizers have no padding
token). The labels and the attention mask mark padding by position, never by id, so an EOS that also pads
is still learnt where it ends a text.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from engine.data.arrays import invalid
from engine.data.hf_text import load_saved_tokenizer
from engine.data.parquet import column_batches, parquet_file, row
from engine.data.text import tokenizer_invalid
from engine.plan.errors import JobFailed
from engine.plan.lm_records import (
    LEARNT_ROLE,
    ChatRecord,
    LMRecord,
    LMRecordChecks,
    PromptRecord,
    RecordRejected,
    TextRecord,
    lm_columns,
)

IGNORE_INDEX = -100  # a label that does not count, as in transformers and F.cross_entropy
BATCH_RECORDS = 1024  # records tokenized at once (and Parquet rows read at once)
Truncation = Literal["error", "left", "right"]


@dataclass
class LMDataset:
    """Blocks of tokens: ids, labels (each position's next token, or IGNORE_INDEX) and the attention mask
    (1 on a token, 0 on padding), each `[N, max_length]` int64."""

    ids: Tensor
    labels: Tensor
    attention_mask: Tensor

    def __len__(self) -> int:
        return self.ids.shape[0]

    def subset(self, indices: Tensor | slice) -> "LMDataset":
        return LMDataset(self.ids[indices], self.labels[indices], self.attention_mask[indices])

    def take(self, index: slice | Tensor, device: torch.device) -> "LMDataset":
        """The blocks at `index` (positions, on any device), on `device`."""
        if isinstance(index, Tensor):
            index = index.to(self.ids.device)
        return LMDataset(*(t[index].to(device, non_blocking=True) for t in self.tensors()))

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.ids, self.labels, self.attention_mask

    def counted_tokens(self) -> int:
        """The tokens whose label counts."""
        return int((self.labels != IGNORE_INDEX).sum())


class Piece(NamedTuple):
    """A stretch of a sample's text, tokenized alone, and whether its tokens are learnt."""

    text: str
    learnt: bool


@dataclass
class Sample:
    """A record's token ids, whether each is learnt (predicted from the ones before it), and where it is."""

    ids: np.ndarray  # int64
    learnt: np.ndarray  # bool
    where: str


def load_lm_dataset(
    path: Path,
    format: str,
    tokenizer_folder: Path | None,
    *,
    max_length: int,
    packing: bool | None = None,
    truncation: Truncation = "error",
    param: str | None = None,
) -> LMDataset:
    """The blocks of the dataset file at `path`, of `format` (`jsonl` or `parquet`, as detected on upload),
    tokenized by the tokenizer saved in `tokenizer_folder` (the teacher's folder). `packing`: None packs
    `text` and leaves prompts and conversations unpacked; `truncation`: what becomes of an unpacked prompt and
    completion or conversation over max_length (`error`, or keep its `left` or `right` part).

    Every problem with the file is a `dataset_invalid` error naming the line or row, with `param` (the
    request's field that gave the file)."""
    try:
        tokenizer = load_lm_tokenizer(tokenizer_folder)
        samples, shape = read_samples(path, format, tokenizer)
        if packing is None:
            packing = shape is TextRecord
        return lm_blocks(
            samples,
            shape=shape,
            max_length=max_length,
            pad_id=padding_id(tokenizer),
            packing=packing,
            truncation=truncation,
        )
    except JobFailed as failed:
        failed.param = failed.param or param
        raise


def load_lm_tokenizer(folder: Path | None) -> PreTrainedTokenizerBase:
    """The tokenizer saved in `folder`, which pads with its padding token or, lacking one, its EOS."""
    tokenizer = load_saved_tokenizer(folder)
    padding_id(tokenizer)
    return tokenizer


def padding_id(tokenizer: PreTrainedTokenizerBase) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    raise tokenizer_invalid(
        "the teacher's tokenizer has neither a padding token nor an end-of-sequence token, one of which "
        "fills the blocks that texts leave short: set tokenizer.eos_token (or pad_token) and save it again "
        "(tokenizer.save_pretrained(folder))"
    )


# --- records --------------------------------------------------------------------------------------


def read_samples(path: Path, format: str, tokenizer: PreTrainedTokenizerBase) -> tuple[list[Sample], type]:
    """The samples of the file's records, in order, and the records' shape."""
    readers = {"jsonl": jsonl_records, "parquet": parquet_records}
    if format not in readers:
        raise invalid(f"a language model reads JSON Lines or Parquet datasets, not {format}")
    if not path.is_file():
        raise invalid(f"dataset file {path.name} does not exist")
    samples: list[Sample] = []
    shape: type | None = None  # the file has a record, else its reader refuses it
    for batch in _batches(readers[format](path), BATCH_RECORDS):
        shape = type(batch[0][0])
        samples += tokenized(tokenizer, batch)
    return samples, shape


def jsonl_records(path: Path) -> Iterator[tuple[LMRecord, str]]:
    """Each record of the non-blank lines and its line (`line 3`)."""
    checks = LMRecordChecks(file=path.name)
    try:
        with path.open("rb") as file:
            for number, line in enumerate(file, start=1):
                record = checks.read(line, number)
                if record is not None:
                    yield record, f"line {number}"
        checks.finish()
    except RecordRejected as rejected:
        raise invalid(str(rejected)) from None


def parquet_records(path: Path) -> Iterator[tuple[LMRecord, str]]:
    """Each row's record and its row (`row 2`, counted from 0), read a batch of rows at a time."""
    file = parquet_file(path)
    checks = LMRecordChecks(file=path.name)
    try:
        _shape, columns = lm_columns(file.schema_arrow)
        for start, values in column_batches(file, path, columns, BATCH_RECORDS):
            for index, fields in enumerate(
                zip(*(values[name] for name in columns), strict=True), start=start
            ):
                yield checks.check(dict(zip(columns, fields, strict=True)), row(index)), row(index)
    except RecordRejected as rejected:
        raise invalid(f"{path.name}: {rejected}") from None


def _batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


# --- tokens ---------------------------------------------------------------------------------------


def tokenized(tokenizer: PreTrainedTokenizerBase, records: list[tuple[LMRecord, str]]) -> list[Sample]:
    """The samples of records of one shape, their texts tokenized in two batches: each record's first
    piece, with the tokenizer's special tokens (its BOS) unless the chat template writes them, and the other
    pieces."""
    chat = isinstance(records[0][0], ChatRecord)
    if chat and tokenizer.chat_template is None:
        raise JobFailed(
            "chat_template_missing",
            "the dataset's records are chat `messages`, which the tokenizer's chat template renders, but the "
            "teacher's tokenizer has none: set one (tokenizer.chat_template = '{% for message in messages %}"
            "...') and save it with the model (tokenizer.save_pretrained(folder)), or write the records as "
            "`prompt` and `completion`",
        )
    pieces = [record_pieces(tokenizer, record, where) for record, where in records]
    wheres = [where for _record, where in records]
    firsts = _encode(tokenizer, [each[0].text for each in pieces], wheres, special_tokens=not chat)
    rests = _encode(
        tokenizer,
        [piece.text for each in pieces for piece in each[1:]],
        [where for each, where in zip(pieces, wheres, strict=True) for _piece in each[1:]],
    )
    rests_of_each = iter(rests)
    eos = None if chat else tokenizer.eos_token_id
    return [
        _sample(each, [first, *islice(rests_of_each, len(each) - 1)], where, eos)
        for each, first, where in zip(pieces, firsts, wheres, strict=True)
    ]


def _sample(pieces: list[Piece], piece_ids: list[list[int]], where: str, eos: int | None) -> Sample:
    """The pieces' ids one after the other, and the EOS (learnt) unless they end with it."""
    ids = [token for token_ids in piece_ids for token in token_ids]
    learnt = [
        piece.learnt for piece, token_ids in zip(pieces, piece_ids, strict=True) for _token in token_ids
    ]
    if eos is not None and ids[-1:] != [eos]:
        ids.append(eos)
        learnt.append(True)
    return Sample(np.array(ids, dtype=np.int64), np.array(learnt, dtype=bool), where)


def record_pieces(tokenizer: PreTrainedTokenizerBase, record: LMRecord, where: str) -> list[Piece]:
    if isinstance(record, TextRecord):
        return [Piece(record.text, learnt=True)]
    if isinstance(record, PromptRecord):
        return [Piece(record.prompt, learnt=False), Piece(record.completion, learnt=True)]
    return chat_pieces(tokenizer, record, where)


def chat_pieces(tokenizer: PreTrainedTokenizerBase, record: ChatRecord, where: str) -> list[Piece]:
    """The conversation's rendering in pieces, each assistant turn one, learnt (see the module docstring)."""
    messages = [message._asdict() for message in record.messages]
    whole = _render(tokenizer, messages, where)
    pieces, done = [], 0
    for index, message in enumerate(record.messages):
        if message.role != LEARNT_ROLE:
            continue
        before = _render(tokenizer, messages[:index], where, generation_prompt=True)
        through = _render(tokenizer, messages[: index + 1], where)
        if not (whole.startswith(through) and through.startswith(before) and len(before) >= done):
            raise JobFailed(
                "chat_template_unsupported",
                f"the tokenizer's chat template renders {where}'s conversation up to its messages[{index}] "
                "(an assistant turn) otherwise than the start of the whole conversation, so the turn's "
                "tokens cannot be found: write each assistant turn as a record of its own (the conversation "
                "up to it, ending with it), or use a template that renders a conversation's first turns the "
                "same whatever follows them",
            )
        pieces += [Piece(whole[done : len(before)], False), Piece(whole[len(before) : len(through)], True)]
        done = len(through)
    pieces.append(Piece(whole[done:], False))
    if not any(piece.learnt and piece.text for piece in pieces):
        raise invalid(
            f"the tokenizer's chat template renders none of {where}'s assistant turns, which are what the "
            "model learns: use a template that writes the assistant's messages"
        )
    return [piece for piece in pieces if piece.text]


def _render(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], where: str, *, generation_prompt: bool = False
) -> str:
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as error:  # a user's Jinja template: it raises what it likes (raise_exception, ...)
        raise invalid(f"the tokenizer's chat template failed on {where}'s conversation: {error}") from None


def _encode(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], wheres: list[str], *, special_tokens: bool = False
) -> list[list[int]]:
    """The ids of each text, in one batch; `wheres[i]` names text i if the tokenizer fails on it."""
    if not texts:
        return []
    options = dict(add_special_tokens=special_tokens, return_attention_mask=False, verbose=False)
    try:
        return tokenizer(texts, **options)["input_ids"]
    except Exception:  # the Rust library raises plain Exception; find the text it failed on
        for text, where in zip(texts, wheres, strict=True):
            try:
                tokenizer(text, **options)
            except Exception as error:
                raise invalid(f"the tokenizer failed on {where}: {error}") from None
        raise


# --- blocks ---------------------------------------------------------------------------------------


def lm_blocks(
    samples: list[Sample],
    *,
    shape: type,
    max_length: int,
    pad_id: int,
    packing: bool,
    truncation: Truncation = "error",
) -> LMDataset:
    """The samples, records of `shape`, in blocks of `max_length` tokens (see the module's docstring)."""
    if packing:
        ids = np.concatenate([sample.ids for sample in samples])
        learnt = np.concatenate([sample.learnt for sample in samples])
        blocks = [_blocks(ids, learnt, max_length, pad_id)]
    else:
        fitted = (
            samples
            if shape is TextRecord
            else [_fitted(sample, max_length, truncation) for sample in samples]
        )
        blocks = [_blocks(sample.ids, sample.learnt, max_length, pad_id) for sample in fitted]
    ids, labels, mask = (torch.from_numpy(np.concatenate(part)) for part in zip(*blocks, strict=True))
    return LMDataset(ids, labels, mask)


def _fitted(sample: Sample, max_length: int, truncation: Truncation) -> Sample:
    """The sample within max_length tokens: as it is, or truncated as asked."""
    if len(sample.ids) <= max_length:
        return sample
    if truncation == "error":
        raise invalid(
            f"{sample.where.capitalize()} has {len(sample.ids):,} tokens, more than max_length "
            f"({max_length:,}): raise dataset.max_length, shorten the record, or have such records truncated "
            "(dataset.truncation `left` keeps their end, `right` their start)"
        )
    kept, part = (slice(-max_length, None), "last") if truncation == "left" else (slice(max_length), "first")
    fitted = Sample(sample.ids[kept], sample.learnt[kept], sample.where)
    if not fitted.learnt[1:].any():
        raise invalid(
            f"{sample.where.capitalize()} has {len(sample.ids):,} tokens, and its {part} {max_length:,}, "
            f"which `{truncation}` truncation keeps, have none to learn: raise dataset.max_length or "
            "shorten it"
        )
    return fitted


def _blocks(
    ids: np.ndarray, learnt: np.ndarray, max_length: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stream of tokens (ids, whether each is learnt) as [B, max_length] ids, labels and attention mask, the
    last block padded."""
    count = len(ids)
    size = -(-count // max_length) * max_length
    padded = np.full(size, pad_id, dtype=np.int64)
    padded[:count] = ids
    labels = np.full(size, IGNORE_INDEX, dtype=np.int64)
    labels[: count - 1] = np.where(learnt[1:], ids[1:], IGNORE_INDEX)
    mask = np.zeros(size, dtype=np.int64)
    mask[:count] = 1
    return padded.reshape(-1, max_length), labels.reshape(-1, max_length), mask.reshape(-1, max_length)
