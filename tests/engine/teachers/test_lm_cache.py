"""A causal language model's teacher in the teacher-output cache: read as its top-k tokens with or without the
cache, the same student either way; the whole vocabulary when k covers it; kept for a later job, which then
never runs the teacher on the training blocks; and keys that change with k, the text options and the
blocks."""

from pathlib import Path

import pytest
import torch

from engine.data.lm_text import LMDataset, load_lm_dataset
from engine.models.hf.wrappers import HFCausalLM
from engine.pipeline import JobFiles, run_distillation
from engine.teachers.cache import entry_key
from engine.teachers.lm_cache import token_key
from tests.engine.factories import FolderCacheStore, RecordingReporter, series
from tests.engine.test_lm_distillation import lm_job, student_weights
from tests.engine.train.test_checkpoints import without_timings
from tests.lm_factories import write_jsonl
from tests.lm_model_factories import LM_MAX_LENGTH, LM_VOCAB, TEXTS, lm_folder, lm_token_ids

VALIDATION_TEXTS = ["a green frog on a log", "the tall dog and the small cat", "good songs in the park"]
TRAINING_BLOCKS, VALIDATION_BLOCKS = 27, 3  # the texts packed into blocks of LM_MAX_LENGTH tokens


@pytest.fixture(scope="module")
def lm_task(tmp_path_factory):
    """A llama teacher, training text, and validation text of other sentences: no block of one is a block of
    the other."""
    folder = tmp_path_factory.mktemp("llama")
    teacher = lm_folder(folder / "teacher")
    train = write_jsonl(folder / "train.jsonl", [{"text": text} for text in TEXTS * 2])
    validation = write_jsonl(folder / "validation.jsonl", [{"text": text} for text in VALIDATION_TEXTS])
    return teacher, train, validation


def distill(job, task, out_dir: Path, store: FolderCacheStore | None = None):
    teacher, train, validation = task
    reporter = RecordingReporter()
    files = JobFiles([teacher], train, validation)
    return run_distillation(job, files, out_dir, reporter, teacher_cache=store), reporter


def training_blocks(task) -> set[tuple[int, ...]]:
    teacher, train, _validation = task
    return blocks_of(load_lm_dataset(train, "jsonl", teacher, max_length=LM_MAX_LENGTH).ids)


def test_the_cached_top_k_run_trains_the_very_student_the_uncached_one_does(lm_task, tmp_path):
    job = lm_job(lm_task[0], top_k=8)
    cached, reporter = distill(job, lm_task, tmp_path / "cached", store=FolderCacheStore(tmp_path / "store"))
    uncached, _ = distill(lm_job(lm_task[0], top_k=8, teacher_cache="off"), lm_task, tmp_path / "uncached")

    assert same_weights(cached, uncached)
    assert cached.series == uncached.series
    assert without_cache(cached.metrics) == without_cache(uncached.metrics)
    assert cached.metrics["teacher_cache"]["status"] == "miss"
    assert uncached.metrics["teacher_cache"] == {
        "status": "off",
        "reason": "distillation.teacher_cache is off",
    }
    messages = [message for _level, message in reporter.events]
    assert (
        "The teacher is read as its top 8 tokens at each position and the rest of the vocabulary as one "
        "outcome." in messages
    )
    assert any(
        m.startswith(f"Teacher outputs over the {TRAINING_BLOCKS} training blocks: computed once")
        for m in messages
    )


GENERATING = {  # objectives whose training blocks are not (only) the dataset's
    "on-policy": {"divergence": "jsd", "on_policy": {"share": 0.5, "max_new_tokens": 6, "prompt_tokens": 4}},
    "sequence-level": {"sequence_level": {"max_new_tokens": 6, "prompt_tokens": 4}},
}


@pytest.mark.parametrize("objective", GENERATING.values(), ids=GENERATING.keys())
def test_what_the_generations_learn_from_is_the_same_with_the_cache(lm_task, tmp_path, objective):
    cached, _ = distill(lm_job(lm_task[0], top_k=8, **objective), lm_task, tmp_path / "cached",
                        store=FolderCacheStore(tmp_path / "store"))  # fmt: skip
    uncached, _ = distill(
        lm_job(lm_task[0], top_k=8, teacher_cache="off", **objective), lm_task, tmp_path / "uncached"
    )
    assert cached.metrics["teacher_cache"]["status"] == "miss"
    assert same_weights(cached, uncached) and cached.series == uncached.series


def test_with_k_over_the_vocabulary_the_top_k_run_is_the_full_vocabulary_run_within_rounding(
    lm_task, tmp_path
):
    whole, reporter = distill(lm_job(lm_task[0], top_k=LM_VOCAB + 1), lm_task, tmp_path / "whole")
    full, full_reporter = distill(lm_job(lm_task[0], top_k=None), lm_task, tmp_path / "full")

    assert (
        f"The teacher is read as its top {LM_VOCAB} tokens at each position (top_k {LM_VOCAB + 1} is more "
        f"than the vocabulary's {LM_VOCAB}) and the rest of the vocabulary as one outcome."
        in [message for _level, message in reporter.events]
    )
    for name in ("loss", "kl_to_teacher", "validation_kl", "validation_perplexity", "validation_agreement"):
        assert series(reporter, name) == pytest.approx(series(full_reporter, name), rel=1e-3, abs=1e-4), name
    assert whole.metrics["kl_to_teacher"] == pytest.approx(full.metrics["kl_to_teacher"], rel=1e-3)
    assert whole.metrics["agreement"] == pytest.approx(full.metrics["agreement"], abs=0.02)
    assert full.metrics["teacher_cache"] == {
        "status": "bypassed",
        "reason": "distillation.top_k is null: the teacher's whole next-token distributions are read, which "
        "are not kept; give a top_k to keep its top tokens",
    }


def test_a_later_job_reads_the_tables_and_never_runs_the_teacher_on_a_training_block(
    lm_task, tmp_path, monkeypatch
):
    store, job = FolderCacheStore(tmp_path / "store"), lm_job(lm_task[0], top_k=8)
    seen, training = teacher_blocks(monkeypatch), training_blocks(lm_task)
    first, _ = distill(job, lm_task, tmp_path / "first", store=store)
    assert len(store.saved) == 2  # the training and the validation blocks' tables
    assert training <= seen  # the first job's teacher computed the training blocks' table
    seen.clear()
    second, reporter = distill(job, lm_task, tmp_path / "second", store=store)

    assert same_weights(first, second) and first.series == second.series
    cache = second.metrics["teacher_cache"]
    assert cache["status"] == "hit" and cache["entries"] == 2 and len(store.saved) == 2
    position_bytes = 8 * 4 + 9 * 2  # int32 ids of k tokens, float16 log-probabilities of k + 1 outcomes
    table_bytes = (TRAINING_BLOCKS + VALIDATION_BLOCKS) * LM_MAX_LENGTH * position_bytes
    assert cache["bytes"] == first.metrics["teacher_cache"]["bytes"] == table_bytes
    assert seen and not training & seen  # the validation blocks only (the teacher's scores, the final KL)
    messages = [message for _level, message in reporter.events]
    assert any(
        m.startswith(f"Teacher outputs over the {TRAINING_BLOCKS} training blocks: read from the cache")
        for m in messages
    )


def test_another_k_is_another_table(lm_task, tmp_path):
    store = FolderCacheStore(tmp_path / "store")
    distill(lm_job(lm_task[0], top_k=8), lm_task, tmp_path / "eight", store=store)
    other, _ = distill(lm_job(lm_task[0], top_k=4), lm_task, tmp_path / "four", store=store)
    assert other.metrics["teacher_cache"]["status"] == "miss" and len(store.saved) == 4


def key_of(teacher: Path, top_k: int = 8, blocks: LMDataset | None = None, **changes) -> str:
    job = lm_job(teacher, top_k=top_k)
    job = job.model_copy(
        update={name: getattr(job, name).model_copy(update=value) for name, value in changes.items()}
    )
    ids = lm_token_ids(count=4)
    blocks = blocks or LMDataset(ids, ids.roll(-1, dims=1), torch.ones_like(ids))
    files = JobFiles([teacher], Path("train.jsonl"))
    return entry_key(
        job,
        files,
        lambda path: f"sha-of-{path}",
        teacher=0,
        part="train",
        inputs=blocks.ids,
        layers=[],
        arithmetic="cpu:fp32",
        tokens=token_key(job, top_k, blocks),
    )


def test_the_key_changes_with_what_the_top_k_tables_depend_on_and_nothing_else(lm_task):
    teacher, base = lm_task[0], key_of(lm_task[0])
    ids = lm_token_ids(count=4)
    depends = {
        "another k": key_of(teacher, top_k=4),
        "unpacked text": key_of(teacher, text={"packing": False}),
        "other blocks": key_of(teacher, blocks=LMDataset(ids + 1, ids, torch.ones_like(ids))),
        "a block's padding": key_of(
            teacher,
            blocks=LMDataset(
                ids, ids.roll(-1, dims=1), torch.ones_like(ids).index_fill(1, torch.tensor([15]), 0)
            ),
        ),
        "a shorter max_length": key_of(teacher, student_architecture={"max_length": 8}),
    }
    assert len(set(depends.values()) | {base}) == len(depends) + 1
    same = {
        "the temperature": key_of(teacher, distillation={"temperature": 2.0}),
        "the divergence": key_of(teacher, distillation={"divergence": "jsd"}),
        "the learning rate": key_of(teacher, training={"learning_rate": 0.5}),
    }
    assert set(same.values()) == {base}


def teacher_blocks(monkeypatch) -> set[tuple[int, ...]]:
    """The blocks of token ids that a frozen model (the teacher) is run on from now on (a set to clear)."""
    seen, forward = set(), HFCausalLM.forward

    def recording(self, input_ids, attention_mask=None):
        if not any(parameter.requires_grad for parameter in self.parameters()):
            seen.update(blocks_of(input_ids))
        return forward(self, input_ids, attention_mask)

    monkeypatch.setattr(HFCausalLM, "forward", recording)
    return seen


def blocks_of(ids: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(block) for block in ids.tolist()}


def same_weights(one, other) -> bool:
    weights = [student_weights(result) for result in (one, other)]
    return weights[0].keys() == weights[1].keys() and all(
        torch.equal(weights[0][name], weights[1][name]) for name in weights[0]
    )


def without_cache(metrics: dict) -> dict:
    return {name: value for name, value in without_timings(metrics).items() if name != "teacher_cache"}
