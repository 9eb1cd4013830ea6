"""A causal language model's teacher in the teacher-output cache: its top-k form (`losses.top_k`: k token
ids in int32 and k + 1 log-probabilities in float16) at every position of the training and validation
blocks, computed once and read back by block, where a vocabulary's worth of logits per position would not
fit. The teacher run on each batch is read in the same top-k form (`evaluate.LiveTeacher`), so that the
student is the same with the cache as without it.

The tables, their keys, the store and the summary are the classifiers' (`cache.TeacherCache`); a table's
row is a block, `[max_length, k]` token ids and `[max_length, k + 1]` log-probabilities.
"""

import hashlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from engine.data.lm_text import LMDataset
from engine.evaluate import CausalLM, LiveTeacher, head_of
from engine.losses.token_level import default_chunk_tokens
from engine.losses.top_k import STORED_LOG_PROBS, TOKEN_IDS, TopKTeacher
from engine.plan.specs import EngineJob
from engine.teachers.cache import PartUse, TableEntry, TeacherCache, entry_key
from engine.teachers.cache_tables import TeacherTable, write_table

TOP_K_TENSORS = ("token_ids", "log_probs")


def read_top_k(top_k: int | None, vocabulary: int) -> int | None:
    """The k the teacher is read with: the request's, at most the whole vocabulary; None: all of it, in
    full."""
    return None if top_k is None else min(top_k, vocabulary)


def bypass_reason(
    cache: TeacherCache, top_k: int | None, train: LMDataset, validation: LMDataset
) -> str | None:
    """Why the teacher must run on every batch of this language model's job, or None if its top-k tables can
    be kept."""
    if off := cache.switched_off():
        return off
    if cache.job.distillation.features:
        return "distillation.features reads the teacher's hidden states, which are not kept"
    if top_k is None:
        return (
            "distillation.top_k is null: the teacher's whole next-token distributions are read, which are "
            "not kept; give a top_k to keep its top tokens"
        )
    position_bytes = top_k * TOKEN_IDS.itemsize + (top_k + 1) * STORED_LOG_PROBS.itemsize
    return cache.room(position_bytes * (train.ids.numel() + validation.ids.numel()))


@dataclass(frozen=True)
class CachedTopK:
    """The teacher over a dataset's blocks read from its table: the values `LiveTeacher` with the same k
    gives."""

    table: TeacherTable
    device: torch.device

    def tokens(self, index: slice | Tensor, batch: LMDataset) -> TopKTeacher:
        rows = self.table.rows(index, self.device)
        token_ids, log_probs = (rows[name].flatten(0, 1) for name in TOP_K_TENSORS)
        return TopKTeacher(token_ids, log_probs)


def cached_top_k(
    cache: TeacherCache, teacher: CausalLM, part: str, dataset: LMDataset, top_k: int
) -> CachedTopK:
    """The teacher's top-k form over `dataset` (`part`: "train" or "validation") from its table; without the
    cache the teacher would run over either in every epoch (the validation blocks for the epoch's scores)."""
    job = cache.job
    key = entry_key(
        job,
        cache.files,
        cache.sha256,
        teacher=0,
        part=part,
        inputs=dataset.ids,
        layers=[],
        arithmetic=cache.arithmetic(part),
        tokens=token_key(job, top_k, dataset),
    )
    write = partial(write_top_k_table, cache, teacher, part, dataset, top_k)
    use = PartUse(part, len(dataset), passes=job.training.epochs, unit="blocks")
    (table,) = cache.tables(use, [TableEntry(key, TOP_K_TENSORS, write)])
    return CachedTopK(table, cache.device)


def token_key(job: EngineJob, top_k: int, dataset: LMDataset) -> dict:
    """What a language model teacher's table depends on beyond a classifier's: the k of its top-k form, how
    the text became blocks, and the blocks themselves (their token ids and attention masks, hashed: the
    teacher's very inputs, whatever made them)."""
    blocks = hashlib.sha256()
    for tensor in (dataset.ids, dataset.attention_mask):
        blocks.update(tensor.contiguous().numpy())
    return {"top_k": top_k, "text": job.text.model_dump(), "blocks": blocks.hexdigest()}


def write_top_k_table(
    cache: TeacherCache, teacher: CausalLM, part: str, dataset: LMDataset, top_k: int, folder: Path
) -> None:
    """The teacher's top-k form at every position of the dataset's blocks, computed as the teacher runs on
    `part`, a chunk of positions' logits at a time."""
    live, length = LiveTeacher(teacher, top_k), dataset.ids.shape[1]
    chunk_tokens = default_chunk_tokens(len(head_of(teacher).weight))

    def outputs(rows: slice) -> dict[str, Tensor]:
        batch = dataset.take(rows, cache.device)
        with cache.autocast(part):
            tokens = live.tokens(rows, batch)
            positions = torch.arange(batch.ids.numel(), device=cache.device)
            chunks = [tokens.chunk(chunk) for chunk in positions.split(chunk_tokens)]
        token_ids = torch.cat([chunk.token_ids for chunk in chunks])
        log_probs = torch.cat([chunk.log_probs for chunk in chunks])
        shape = (len(batch), length, -1)
        return dict(zip(TOP_K_TENSORS, (token_ids.view(shape), log_probs.view(shape)), strict=True))

    write_table(folder, outputs, len(dataset), cache.job.training.batch_size, cache.tick)
