"""On-policy distillation (GKD, Agarwal et al. 2024): on a share of the steps the batch is the student's own
continuations of its blocks' prompts, on which the student learns the teacher's next-token distributions.

Which steps, and the seed of each one's sampling, are drawn from the run's generator, which the checkpoints
keep: a resumed job draws what the uninterrupted one drew, and every rank the same."""

from dataclasses import dataclass

import torch
from torch import nn

from engine.data.lm_text import LMDataset, load_lm_tokenizer
from engine.lm_preparation import LMSetup
from engine.plan.specs import EngineJob, OnPolicy
from engine.train.generation import (
    SpecialIds,
    block_prompts,
    continue_prompts,
    continued_blocks,
    prompt_tokens_of,
)

SEEDS = 2**62  # a sampling seed is drawn below this


@dataclass(frozen=True)
class OnPolicySteps:
    settings: OnPolicy
    special: SpecialIds
    prompt_tokens: int

    def draw(self, generator: torch.Generator) -> int | None:
        """The seed of this step's sampling if it is on-policy (with probability `share`), else None."""
        if torch.rand((), generator=generator) >= self.settings.share:
            return None
        return int(torch.randint(SEEDS, (), generator=generator))

    def sampled(self, student: nn.Module, batch: LMDataset, seed: int) -> LMDataset:
        """The batch's prompts, each continued by the student as far as its block holds."""
        max_length = batch.ids.shape[1]
        prompts = block_prompts(batch, self.prompt_tokens)
        continuations = continue_prompts(
            student,
            prompts,
            limits=[min(self.settings.max_new_tokens, max_length - len(prompt)) for prompt in prompts],
            temperature=self.settings.temperature,
            seed=seed,
            special=self.special,
        )
        return continued_blocks(prompts, continuations, max_length=max_length, pad=self.special.pad)


def on_policy_steps(setup: LMSetup, job: EngineJob) -> OnPolicySteps | None:
    """The job's on-policy steps; None where it asks for none."""
    settings = job.distillation.on_policy
    if settings is None:
        return None
    tokenizer = load_lm_tokenizer(setup.tokenizer_folder)
    prompt_tokens = prompt_tokens_of(settings.prompt_tokens, job.student_architecture.max_length)
    return OnPolicySteps(settings, SpecialIds.of(tokenizer), prompt_tokens)
