"""A causal language model distilled on generated text: sequence-level KD on the teacher's completions (the
artifact a later job trains on as its dataset) and on-policy distillation on the student's own samples."""

import math

import pytest
import torch
from pydantic import ValidationError

from engine.data.lm_text import IGNORE_INDEX, LMDataset, load_lm_dataset, load_lm_tokenizer, tokenized
from engine.evaluate import flat_hidden, head_of, teacher_tokens
from engine.losses.token_objective import TokenObjective
from engine.models.hf.build import build_hf_model
from engine.pipeline import JobFiles, run_distillation
from engine.plan.errors import TIME_LIMIT_EXCEEDED, JobCancelled, JobFailed
from engine.plan.lm_records import LMRecordChecks, PromptRecord
from engine.plan.rules import check_job
from engine.plan.specs import DistillationConfig, EngineJob
from engine.teachers.loading import load_teacher
from engine.train.checkpoints import Checkpoints
from engine.train.generation import SpecialIds, continue_prompts, continued_blocks
from engine.train.on_policy import OnPolicySteps
from engine.train.sequence_level import GENERATIONS_ARTIFACT, added_prefix, generation_record
from tests.engine.factories import FolderStore, KilledAt, RecordingReporter, WorkerKilled, series
from tests.engine.test_hf_methods import spec_of
from tests.engine.test_lm_distillation import EPOCHS, ON_POLICY, distill, lm_job, student_weights
from tests.lm_factories import lm_tokenizer_folder, write_jsonl
from tests.lm_model_factories import (
    EOS,
    LM_MAX_LENGTH,
    PAD,
    TEXTS,
    lm_folder,
    lm_spec,
    lm_token_ids,
    lm_tokenizer,
)

SEQUENCE_LEVEL = {"max_new_tokens": 8, "temperature": 1.0, "samples_per_prompt": 2, "prompt_tokens": 4}
SPECIAL = SpecialIds(pad=PAD, eos=EOS)


def prompts_of(texts: list[str]) -> list[torch.Tensor]:
    tokenizer = lm_tokenizer()
    return [torch.tensor(tokenizer(text).input_ids) for text in texts]


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_prompts_continue_in_a_batch_as_they_do_alone(tmp_path, model_type):
    folder = lm_folder(tmp_path / "teacher", model_type)
    teacher = load_teacher(folder, "hf", spec_of(folder))
    prompts = prompts_of(["the cat sat on the", "a bird", "what a good day for a"])
    settings = {"limits": [8, 8, 3], "special": SPECIAL}

    greedy = continue_prompts(teacher, prompts, temperature=0.0, seed=0, **settings)
    assert [len(tokens) for tokens in greedy] == [8, 8, 3]  # random weights: no EOS this soon
    for prompt, batched in zip(prompts, greedy, strict=True):
        (alone,) = continue_prompts(teacher, [prompt], temperature=0.0, seed=0, **settings | {"limits": [8]})
        assert torch.equal(batched, alone[: len(batched)])  # left padding changes nothing
    sampled = [
        continue_prompts(teacher, prompts, temperature=1.0, top_p=0.9, seed=seed, samples=2, **settings)
        for seed in (1, 1, 2)
    ]
    assert len(sampled[0]) == 6
    assert all(torch.equal(a, b) for a, b in zip(sampled[0], sampled[1], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(sampled[0], sampled[2], strict=True))


def test_a_continued_block_learns_the_continuation_only():
    prompt, continuation = torch.tensor([5, 6, 7]), torch.tensor([8, 9, EOS])
    (ids, labels, mask) = (
        t[0] for t in continued_blocks([prompt], [continuation], max_length=8, pad=PAD).tensors()
    )
    assert ids.tolist() == [5, 6, 7, 8, 9, EOS, PAD, PAD]
    assert labels.tolist() == [IGNORE_INDEX, IGNORE_INDEX, 8, 9, EOS] + [IGNORE_INDEX] * 3
    assert mask.tolist() == [1] * 6 + [0] * 2


def test_a_generation_is_written_as_the_record_that_reads_back_within_the_block(tmp_path):
    tokenizer = load_lm_tokenizer(lm_tokenizer_folder(tmp_path, bos=True))  # a BOS before every text
    special, prefix = SpecialIds.of(tokenizer), added_prefix(tokenizer)
    prompt = torch.tensor(tokenizer("the cat sat").input_ids)
    completion = torch.tensor(tokenizer(" on the mat", add_special_tokens=False).input_ids + [special.eos])

    def record(max_length: int) -> PromptRecord | None:
        return generation_record(
            tokenizer, prompt, completion, special=special, prefix=prefix, max_length=max_length
        )

    assert prefix == [tokenizer.bos_token_id]
    assert record(64) == PromptRecord("the cat sat", " on the mat")
    (sample,) = tokenized(tokenizer, [(record(64), "line 1")])
    assert sample.ids.tolist() == prompt.tolist() + completion.tolist()  # read back: the very ids
    shorter = record(len(prompt) + 3)
    assert len(tokenized(tokenizer, [(shorter, "line 1")])[0].ids) <= len(prompt) + 3
    assert " on the mat".startswith(shorter.completion) and shorter.completion.strip()
    assert record(len(prompt) + 1) is None  # no room for a token besides the EOS


def test_on_policy_steps_lower_the_divergence_on_the_students_own_samples(tmp_path):
    folder = lm_folder(tmp_path / "teacher")
    teacher = load_teacher(folder, "hf", spec_of(folder))
    torch.manual_seed(0)
    student = build_hf_model(lm_spec("llama", num_hidden_layers=1))
    config = DistillationConfig(alpha=1.0, beta=1.0, divergence="jsd", on_policy=ON_POLICY)
    steps = OnPolicySteps(config.on_policy, SPECIAL, prompt_tokens=4)
    ids = lm_token_ids(count=4)
    prompts = LMDataset(ids, ids.roll(-1, dims=1), torch.ones_like(ids))  # plain text: prompts of 4 tokens
    objective, optimizer = TokenObjective(config), torch.optim.Adam(student.parameters(), lr=1e-2)

    def on_policy_terms(seed: int) -> dict[str, torch.Tensor]:
        sampled = steps.sampled(student, prompts, seed)
        assert torch.equal(sampled.ids[:, :4], ids[:, :4]) and sampled.counted_tokens() > 0
        hidden, labels = flat_hidden(student, sampled), sampled.labels.flatten()
        teacher_outputs = teacher_tokens(teacher, sampled)
        return objective(hidden, head_of(student), labels, teacher_outputs, 1.0, cross_entropy=False)

    before = [on_policy_terms(seed)["soft_loss"].item() for seed in range(3)]
    for step in range(30):
        terms = on_policy_terms(100 + step)
        assert terms["loss"].item() == terms["soft_loss"].item()  # no cross-entropy on the student's tokens
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
    after = [on_policy_terms(seed)["soft_loss"].item() for seed in range(3)]
    assert math.isfinite(sum(after)) and sum(after) < 0.5 * sum(before)


def test_sequence_level_teaches_the_teachers_completions_which_a_later_job_trains_on_alike(lm_task, tmp_path):
    teacher, train = lm_task
    validation = write_jsonl(tmp_path / "validation.jsonl", [{"text": text} for text in TEXTS[:3]])
    files = JobFiles([teacher], train, validation)
    reporter = RecordingReporter()
    first = run_distillation(
        lm_job(teacher, sequence_level=SEQUENCE_LEVEL), files, tmp_path / "first", reporter
    )

    kl = series(reporter, "validation_kl")
    assert len(kl) == EPOCHS and kl[-1] < kl[0]
    generations = first.artifacts[GENERATIONS_ARTIFACT]
    checks = LMRecordChecks(file=generations.name)  # the upload check's rules
    lines = generations.read_bytes().splitlines(keepends=True)
    records = [checks.read(line, number) for number, line in enumerate(lines, start=1)]
    checks.finish()
    blocks = load_lm_dataset(train, "jsonl", teacher, max_length=LM_MAX_LENGTH).ids
    assert records[0].prompt == lm_tokenizer().decode(blocks[0, :4])  # plain text: its first prompt_tokens
    # Two of each block's prompt, but those the random teacher completed with blanks only
    assert 1.5 * len(blocks) < len(records) <= 2 * len(blocks)
    assert all(isinstance(record, PromptRecord) for record in records)
    assert any(
        message.startswith(f"The teacher completed the {len(blocks)} training prompts")
        and f"{len(records)} records" in message
        for _level, message in reporter.events
    )

    files = JobFiles([teacher], generations, validation)
    second = run_distillation(lm_job(teacher), files, tmp_path / "second", RecordingReporter())
    assert second.series == first.series
    weights = [student_weights(result) for result in (first, second)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[1])


def test_a_resumed_job_reads_the_teachers_completions_from_its_checkpoint(lm_task, tmp_path):
    job = lm_job(lm_task[0], sequence_level=SEQUENCE_LEVEL)
    uninterrupted, _ = distill(job, lm_task, tmp_path / "whole")
    store = FolderStore(tmp_path / "store")
    with pytest.raises(WorkerKilled):  # after the checkpoint saved once the completions were written, alone
        distill(job, lm_task, tmp_path / "killed", KilledAt(kill_at=4), Checkpoints(store, 3600.0))
    resumed, reporter = distill(job, lm_task, tmp_path / "resumed", checkpoints=Checkpoints(store, 0.0))

    messages = [message for _level, message in reporter.events]
    assert "The teacher's completions are the checkpoint's: they are not generated again" in messages
    assert not any(message.startswith("The teacher completed") for message in messages)
    generations = [result.artifacts[GENERATIONS_ARTIFACT].read_bytes() for result in (resumed, uninterrupted)]
    assert generations[0] == generations[1] and resumed.series == uninterrupted.series
    weights = [student_weights(result) for result in (resumed, uninterrupted)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[1])


def test_a_short_on_policy_job_brings_the_student_closer_to_the_teacher(lm_task, tmp_path):
    on_policy, reporter = distill(
        lm_job(lm_task[0], divergence="jsd", on_policy=ON_POLICY), lm_task, tmp_path
    )
    off_policy, _ = distill(lm_job(lm_task[0], divergence="jsd"), lm_task, tmp_path / "off")

    kl = series(reporter, "validation_kl")
    assert len(kl) == EPOCHS and kl[-1] < kl[0]
    weights = [student_weights(result) for result in (on_policy, off_policy)]
    assert not all(torch.equal(weights[0][name], weights[1][name]) for name in weights[1])


@pytest.mark.parametrize(
    "reporter, deadline, raised",
    [(RecordingReporter(stop_after=0), None, JobCancelled), (RecordingReporter(), 0.0, JobFailed)],
    ids=["cancelled", "past its time bound"],
)
def test_the_teachers_generation_stops_on_a_cancel_and_at_the_time_bound(
    tmp_path, reporter, deadline, raised
):
    teacher = lm_folder(tmp_path / "teacher")
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": text} for text in TEXTS])
    # The cache's pass over the validation blocks, the first thing to stop at otherwise, is off.
    job = lm_job(teacher, sequence_level=SEQUENCE_LEVEL, teacher_cache="off")
    with pytest.raises(raised, match="while the teacher generated completions") as stopped:
        run_distillation(job, JobFiles([teacher], train), tmp_path / "out", reporter, deadline=deadline)
    if raised is JobFailed:
        assert stopped.value.code == TIME_LIMIT_EXCEEDED
    assert "running" not in reporter.phases


CLASSIFIER = {
    "teachers": [{"format": "pt2"}],
    "student_architecture": {"family": "mlp", "input_shape": [4], "num_classes": 2},
}
REFUSED = {
    "sequence-level KD of a classifier": (CLASSIFIER, {"sequence_level": {}}, "distillation.sequence_level"),
    "on-policy distillation of a classifier": (CLASSIFIER, {"on_policy": {}}, "distillation.on_policy"),
    "a text prompt that fills the block": (
        None,
        {"sequence_level": {"prompt_tokens": LM_MAX_LENGTH - 1}},
        "distillation.sequence_level.prompt_tokens",
    ),
    "on-policy steps without the divergence": (
        None,
        {"on_policy": {}, "alpha": 0.0, "beta": 1.0},
        "distillation.alpha",
    ),
}


@pytest.mark.parametrize("job, distillation, field", REFUSED.values(), ids=REFUSED.keys())
def test_what_generation_cannot_do_is_refused_by_its_field(tmp_path, job, distillation, field):
    if job is None:
        job = lm_job(lm_folder(tmp_path / "teacher")).model_dump()
    job = EngineJob.model_validate(job | {"distillation": job.get("distillation", {}) | distillation})
    with pytest.raises(JobFailed) as refused:
        check_job(job)
    assert refused.value.code == "unsupported_combination" and refused.value.param == field


def test_several_greedy_completions_of_a_prompt_are_refused():
    with pytest.raises(ValidationError, match="the same completion each time"):
        DistillationConfig(sequence_level={"temperature": 0.0, "samples_per_prompt": 2})
