"""Sequence-level knowledge distillation (Kim & Rush 2016): before the first step, the teacher completes the
prompts of the training blocks; the completions are written as `prompt` and `completion` records, the artifact
`teacher_generations.jsonl` (a dataset a later job may upload and train on as it is), and the student trains
on that file's blocks, read as any dataset is, instead of the dataset's.

A prompt and its completion are written as text: the prompt without the tokens the tokenizer puts before a
text itself (its BOS), which reading the record adds again, and the completion without its EOS, which
reading appends to every completion. Special tokens in between (a chat template's) are kept as text, which
the tokenizer reads back as those tokens. A completion is cut short where the record, read back as tokens
with that EOS, would outgrow its block (text does not always encode to the ids it was decoded from), so a
later job reads the file as this one does, with the dataset options' defaults; one with nothing but blanks
(or nothing: a prompt that fills its block) is left out, as a dataset's completion must have something to
learn.

The generation counts against the job's time bound and stops on a cancel, checked between batches. Once
done, the completions are kept in the job's checkpoint, saved then: a job that resumes from it (after a lost
worker, or a resubmission that goes on past the time bound) reads them from there instead of generating
again."""

import json
import time
from dataclasses import replace
from pathlib import Path

from torch import Tensor
from transformers import PreTrainedTokenizerBase

from engine.data.lm_text import load_lm_dataset, load_lm_tokenizer, tokenized
from engine.lm_preparation import LMSetup
from engine.plan.errors import JobCancelled, JobFailed, time_limit_exceeded
from engine.plan.lm_records import PromptRecord
from engine.plan.specs import EngineJob
from engine.reporting import Reporter
from engine.train.checkpoints import JobCheckpoints
from engine.train.generation import SpecialIds, block_prompts, continue_prompts, prompt_tokens_of

GENERATIONS_ARTIFACT = "teacher_generations.jsonl"
FIELD = "distillation.sequence_level"
PROGRESS_EVENTS = 10  # at most, over the generation


def with_teacher_generations(
    setup: LMSetup,
    job: EngineJob,
    out_dir: Path,
    reporter: Reporter,
    deadline: float | None,
    *,
    checkpoints: JobCheckpoints,
) -> tuple[LMSetup, Path]:
    """The setup whose training blocks are the prompts and the teacher's completions, and the file of
    them: generated and kept in the checkpoint, or read from the one the job resumes from."""
    path = out_dir / GENERATIONS_ARTIFACT
    kept = checkpoints.kept.get(GENERATIONS_ARTIFACT)
    if kept is None:
        write_generations(setup, job, path, reporter, deadline)
        checkpoints.keep(GENERATIONS_ARTIFACT, path.read_text(encoding="utf-8"))
    else:
        path.write_text(kept, encoding="utf-8")
        reporter.event("The teacher's completions are the checkpoint's: they are not generated again")
    # read as a later job that uploads the file reads it: its records fit the blocks as they are
    train = load_lm_dataset(
        path, "jsonl", setup.tokenizer_folder, max_length=job.student_architecture.max_length, param=FIELD
    )
    reporter.event(
        f"The student learns from the teacher's completions: {len(train):,} training blocks "
        f"({train.counted_tokens():,} tokens learnt)"
    )
    return replace(setup, train=train), path


def write_generations(
    setup: LMSetup, job: EngineJob, path: Path, reporter: Reporter, deadline: float | None
) -> None:
    """The teacher's completions of the training blocks' prompts, a batch of blocks at a time, as JSON
    Lines records at `path`."""
    tokenizer, max_length = load_lm_tokenizer(setup.tokenizer_folder), job.student_architecture.max_length
    special, prefix = SpecialIds.of(tokenizer), added_prefix(tokenizer)
    blocks, batches = len(setup.train), range(0, len(setup.train), job.training.batch_size)
    every = max(1, len(batches) // PROGRESS_EVENTS)
    started, written, left_out = time.perf_counter(), 0, 0
    with path.open("w", encoding="utf-8") as file:
        for number, start in enumerate(batches, start=1):
            stop_check(reporter, deadline, done=start, total=blocks)
            for prompt, completion in teacher_completions(setup, job, start, special):
                record = generation_record(
                    tokenizer, prompt, completion, special=special, prefix=prefix, max_length=max_length
                )
                if record is None:
                    left_out += 1
                    continue
                file.write(json.dumps(record._asdict(), ensure_ascii=False) + "\n")
                written += 1
            if number % every == 0 and number < len(batches):
                reporter.event(
                    f"Teacher generations: {min(start + job.training.batch_size, blocks):,} of {blocks:,} "
                    f"prompts completed ({time.perf_counter() - started:.1f} s)"
                )
    left_out_note = f"; {left_out:,} with nothing to learn (blanks, or no room) left out" if left_out else ""
    reporter.event(
        f"The teacher completed the {blocks:,} training prompts in {time.perf_counter() - started:.1f} s: "
        f"{written:,} records{left_out_note}"
    )
    if not written:
        raise JobFailed(
            "generations_empty",
            f"the teacher's completions of the {blocks:,} training prompts are all empty (it ended each with "
            "its EOS at once, or wrote only blanks), so there is nothing to learn from them: sample them "
            f"({FIELD}.temperature > 0), give longer prompts ({FIELD}.prompt_tokens), or remove {FIELD}",
            FIELD,
        )


def teacher_completions(
    setup: LMSetup, job: EngineJob, start: int, special: SpecialIds
) -> list[tuple[Tensor, Tensor]]:
    """Each prompt of the batch of blocks from `start` with each of the teacher's completions of it, which
    leave its block room for the EOS."""
    settings, max_length = job.distillation.sequence_level, job.student_architecture.max_length
    batch = setup.train.take(slice(start, start + job.training.batch_size), setup.device)
    prompts = block_prompts(batch, prompt_tokens_of(settings.prompt_tokens, max_length))
    with setup.precision.autocast():
        completions = continue_prompts(
            setup.teacher,
            prompts,
            limits=[min(settings.max_new_tokens, max_length - len(prompt) - 1) for prompt in prompts],
            temperature=settings.temperature,
            top_p=settings.top_p,
            samples=settings.samples_per_prompt,
            seed=job.training.seed + start,
            special=special,
        )
    each_prompt = [prompt for prompt in prompts for _sample in range(settings.samples_per_prompt)]
    return list(zip(each_prompt, completions, strict=True))


def generation_record(
    tokenizer: PreTrainedTokenizerBase,
    prompt: Tensor,
    completion: Tensor,
    *,
    special: SpecialIds,
    prefix: list[int],
    max_length: int,
) -> PromptRecord | None:
    """The record of a prompt's ids and the teacher's completion of it, the completion cut where the
    record read back (`lm_text.tokenized`: text does not always encode to the ids it was decoded from)
    would outgrow a block; None where no completion with something to learn is left."""
    prompt_ids, completion_ids = prompt.tolist(), completion.tolist()
    if prompt_ids[: len(prefix)] == prefix:
        prompt_ids = prompt_ids[len(prefix) :]
    if completion_ids[-1:] == [special.eos]:
        completion_ids = completion_ids[:-1]
    while completion_ids:
        record = PromptRecord(decoded(tokenizer, prompt_ids), decoded(tokenizer, completion_ids))
        if not record.completion.strip():
            return None
        (sample,) = tokenized(tokenizer, [(record, "a generation")])
        overflow = len(sample.ids) - max_length
        if overflow <= 0:
            return record
        completion_ids = completion_ids[:-overflow]
    return None


def decoded(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    """The text of the ids as the tokenizer reads it back: special tokens written, no spaces tidied."""
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def added_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokens the tokenizer puts before a text itself (a BOS), found around a text's own tokens."""
    marked = tokenizer("a")["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(marked) - len(plain) + 1):
        if marked[start : start + len(plain)] == plain:
            return marked[:start]
    return []


def stop_check(reporter: Reporter, deadline: float | None, *, done: int, total: int) -> None:
    """A cancel, or the job's time bound passed, stops the generation between batches."""
    where = f"while the teacher generated completions ({done:,} of {total:,} prompts), before the first step"
    if reporter.should_stop():
        raise JobCancelled(f"stopped {where}")
    if deadline is not None and time.time() >= deadline:
        raise time_limit_exceeded(f"{where}; nothing was trained yet, so no checkpoint is kept")
