"""A causal language model distilled on generated text: sequence-level KD on the teacher's completions (the
artifact a later job trains on as its dataset) and on-policy distillation on the student's own samples."""

import math

import pytest
import torch
from pydantic import ValidationError

from engine.data.lm_text import IGNORE_INDEX, LMDataset
from engine.evaluate import flat_hidden, head_of, teacher_tokens
from engine.losses.token_objective import TokenObjective
from engine.models.hf.build import build_hf_model
from engine.plan.errors import JobFailed
from engine.plan.rules import check_job
from engine.plan.specs import DistillationConfig, EngineJob
from engine.teachers.loading import load_teacher
from engine.train.generation import SpecialIds, continue_prompts, continued_blocks
from engine.train.on_policy import OnPolicySteps
from tests.engine.factories import series
from tests.engine.test_hf_methods import spec_of
from tests.engine.test_lm_distillation import EPOCHS, ON_POLICY, distill, lm_job, student_weights
from tests.lm_model_factories import (
    EOS,
    LM_MAX_LENGTH,
    PAD,
    lm_folder,
    lm_spec,
    lm_token_ids,
    lm_tokenizer,
)

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


def test_a_short_on_policy_job_brings_the_student_closer_to_the_teacher(lm_task, tmp_path):
    on_policy, reporter = distill(
        lm_job(lm_task[0], divergence="jsd", on_policy=ON_POLICY), lm_task, tmp_path
    )
    off_policy, _ = distill(lm_job(lm_task[0], divergence="jsd"), lm_task, tmp_path / "off")

    kl = series(reporter, "validation_kl")
    assert len(kl) == EPOCHS and kl[-1] < kl[0]
    weights = [student_weights(result) for result in (on_policy, off_policy)]
    assert not all(torch.equal(weights[0][name], weights[1][name]) for name in weights[1])


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
