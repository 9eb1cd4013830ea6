"""Tiny causal language models of every model type the service builds (a few ten thousand parameters each,
from configs: nothing is downloaded), a byte-level BPE tokenizer trained in the test, and the
`save_pretrained` folder a user uploads as an `hf` teacher: model, tokenizer with its chat template, and
generation config.

The tokenizer's ids: <pad> 0, <s> 1, </s> 2, then the 256 bytes and the merges learnt from `TEXTS`, up to
`LM_VOCAB`; the models embed exactly those ids."""

from pathlib import Path

import torch
from transformers import GenerationConfig, PreTrainedTokenizerFast

from engine.models.hf.build import build_hf_model
from engine.plan.specs import HFSpec
from tests.lm_factories import byte_level_bpe

LM_VOCAB = 300
PAD, BOS, EOS = 0, 1, 2
LM_MAX_LENGTH = 16
TEXTS = [
    "the cat sat on the mat and the dog sat on the log",
    "a bird sang a song in the tall green tree",
    "what a good day for a walk in the park",
] * 4
CHAT_TEMPLATE = "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"

_TOKENS = {"vocab_size": LM_VOCAB, "bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD}
_LLAMA_LIKE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "initializer_range": 0.2,  # outputs far apart enough for the tests to tell mistakes from rounding
    **_TOKENS,
}
LM_CONFIGS = {
    "gpt2": {
        "n_embd": 32,
        "n_layer": 4,
        "n_head": 4,
        "n_inner": None,  # as save_pretrained writes GPT-2's: 4 x n_embd
        "n_positions": 64,
        "initializer_range": 0.2,
        **_TOKENS,
    },
    "llama": _LLAMA_LIKE | {"head_dim": 8},
    "mistral": _LLAMA_LIKE | {"head_dim": 8, "sliding_window": None},
    "phi3": _LLAMA_LIKE | {"original_max_position_embeddings": 64},
    "qwen2": _LLAMA_LIKE | {"layer_types": ["full_attention"] * 4},
    "qwen3": _LLAMA_LIKE | {"head_dim": 8, "layer_types": ["full_attention"] * 4},
}


def lm_spec(model_type: str = "llama", **config) -> HFSpec:
    """A spec of the model type's tiny config, with `config` changed, reading LM_MAX_LENGTH tokens."""
    return HFSpec(
        config={"model_type": model_type, **LM_CONFIGS[model_type], **config}, max_length=LM_MAX_LENGTH
    )


def lm_tokenizer(texts: list[str] = TEXTS) -> PreTrainedTokenizerFast:
    """Byte-level BPE with <pad>, <s> and </s>; its chat template renders `role: content` lines."""
    tokenizer = byte_level_bpe(texts, vocab_size=LM_VOCAB, special_tokens=["<pad>", "<s>", "</s>"])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    wrapped.chat_template = CHAT_TEMPLATE
    assert len(wrapped) == LM_VOCAB and wrapped.convert_tokens_to_ids(["<pad>", "<s>", "</s>"]) == [
        PAD,
        BOS,
        EOS,
    ]
    return wrapped


def lm_token_ids(count: int = 2, length: int = LM_MAX_LENGTH, seed: int = 0) -> torch.Tensor:
    """Token ids [count, length] of ordinary tokens (no special one)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(EOS + 1, LM_VOCAB, (count, length), generator=generator)


def lm_folder(
    directory: Path,
    model_type: str = "llama",
    *,
    tied: bool = False,
    generation: GenerationConfig | None = None,
    seed: int = 0,
) -> Path:
    """A tiny causal LM of `model_type` at random initialisation, saved as `save_pretrained` saves it with its
    tokenizer (and chat template) and `generation` as its generation config (default: transformers' own,
    from the model's config); with `tied`, its LM head is its token embeddings, which the weights then
    hold once (no `lm_head.weight`)."""
    torch.manual_seed(seed)
    model = build_hf_model(lm_spec(model_type, tie_word_embeddings=tied)).model.eval()
    if generation is not None:
        model.generation_config = generation
    model.save_pretrained(directory)
    lm_tokenizer().save_pretrained(directory)
    return directory
