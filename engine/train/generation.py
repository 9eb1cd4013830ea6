"""A causal language model's continuations of the training blocks' prompts, as sequence-level and on-policy
distillation sample them: the prompts left-padded into one seeded `generate` call, each continuation up to
and with its first EOS; and prompts with their continuations made blocks again, right-padded as the dataset's
are, the continuations' tokens learnt."""

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import GenerationConfig, PreTrainedTokenizerBase

from engine.data.lm_text import IGNORE_INDEX, LMDataset, padding_id
from engine.evaluate import evaluating


@dataclass(frozen=True)
class SpecialIds:
    """The tokenizer's padding id (else its EOS, as the blocks are padded) and EOS, which ends a
    continuation (None: none does)."""

    pad: int
    eos: int | None

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> "SpecialIds":
        return cls(padding_id(tokenizer), tokenizer.eos_token_id)


def prompt_tokens_of(prompt_tokens: int | None, max_length: int) -> int:
    """A `text` block's prompt length: the request's `prompt_tokens`, else a quarter of the block."""
    return prompt_tokens or max(1, max_length // 4)


def block_prompts(blocks: LMDataset, prompt_tokens: int) -> list[Tensor]:
    """Each block's prompt: its tokens before its first learnt one (a `prompt` record's, a conversation's
    before the assistant's turn), else, where the block learns from its first token on (plain text), its
    first `prompt_tokens`; never past its last token."""
    prompts = []
    for ids, labels, mask in zip(*blocks.tensors(), strict=True):
        learnt = (labels != IGNORE_INDEX).nonzero()
        first = int(learnt[0]) + 1 if len(learnt) else len(ids)
        prompts.append(ids[: min(first if first > 1 else prompt_tokens, int(mask.sum()))])
    return prompts


@torch.no_grad()
def continue_prompts(
    model: nn.Module,
    prompts: list[Tensor],
    *,
    limits: list[int],
    temperature: float,
    seed: int,
    special: SpecialIds,
    top_p: float = 1.0,
    samples: int = 1,
) -> list[Tensor]:
    """The continuations of `prompts` by `model` (an `HFCausalLM`, in eval mode meanwhile), `samples` of
    each prompt one after the other: at most `limits[i]` tokens after prompt i (none where it is 0 or less),
    up to and with the first EOS. Sampled at `temperature` (0: greedy) within the `top_p` mass, from the
    global generators seeded with `seed` and restored afterwards, so that the training draws the same random
    numbers with or without it."""
    longest = max(limits, default=0)
    if longest < 1:
        return [prompt.new_zeros(0) for prompt in prompts for _sample in range(samples)]
    ids, mask = left_padded(prompts, special.pad, device=prompts[0].device)
    sampled = temperature > 0
    # transformers' own defaults, so that a generation config saved with the model (a repetition penalty,
    # top_k) does not change what the request asks for; max_new_tokens in place of max_length
    defaults = GenerationConfig._get_default_generation_params()
    del defaults["max_length"]
    config = GenerationConfig(
        **defaults
        | {
            "max_new_tokens": longest,
            "do_sample": sampled,
            "temperature": temperature if sampled else 1.0,
            "top_p": top_p if sampled else 1.0,
            "top_k": 0 if sampled else defaults["top_k"],
            "num_return_sequences": samples,
            "pad_token_id": special.pad,
            "eos_token_id": special.eos,
        }
    )
    devices = [ids.device] if ids.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), evaluating(model):
        torch.manual_seed(seed)
        generated = model.model.generate(ids, attention_mask=mask, generation_config=config)
    rows = generated[:, ids.shape[1] :]
    each_limit = [max(limit, 0) for limit in limits for _sample in range(samples)]
    return [until_eos(row[:limit], special.eos) for row, limit in zip(rows, each_limit, strict=True)]


def left_padded(prompts: list[Tensor], pad: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The prompts as one batch `[N, longest]` of ids padded on the left, and its attention mask."""
    width = max(len(prompt) for prompt in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def until_eos(tokens: Tensor, eos: int | None) -> Tensor:
    """The tokens up to and with the first EOS (`generate` pads a finished sequence after it)."""
    if eos is None:
        return tokens
    ends = (tokens == eos).nonzero()
    return tokens[: int(ends[0]) + 1] if len(ends) else tokens


def continued_blocks(
    prompts: list[Tensor], continuations: list[Tensor], *, max_length: int, pad: int
) -> LMDataset:
    """A block of each prompt and its continuation, cut to `max_length` and right-padded: the continuation's
    tokens learnt (each the label of the position before it), the prompt's not."""
    rows, device = len(prompts), prompts[0].device
    ids = torch.full((rows, max_length), pad, dtype=torch.long, device=device)
    labels = torch.full_like(ids, IGNORE_INDEX)
    mask = torch.zeros_like(ids)
    for row, (prompt, continuation) in enumerate(zip(prompts, continuations, strict=True)):
        sequence = torch.cat([prompt, continuation])[:max_length]
        length, start = len(sequence), len(prompt)
        ids[row, :length], mask[row, :length] = sequence, 1
        labels[row, start - 1 : length - 1] = sequence[start:]
    return LMDataset(ids, labels, mask)
