"""A tiny causal language model's tokenizer, trained in the test and saved as a `save_pretrained` folder, the
way a teacher's folder holds it: byte-level BPE (any text encodes, no unknown token) with `<s>` BOS, `</s>`
EOS and ChatML's `<|im_start|>`/`<|im_end|>`, a llama-style BOS before each text or not (gpt2-style), no
padding token (as llama's and gpt2's) or `<pad>`, and a ChatML chat template whose assistant turns are
`{% generation %}` blocks, so transformers' own assistant mask can be compared with ours.

Records of each dataset shape, and writers of them as JSON Lines and as Parquet (as the `datasets` library
writes them)."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

BPE_VOCAB = 300  # the 256 bytes, the special tokens and a few merges
SPECIALS = ["<s>", "</s>", "<|im_start|>", "<|im_end|>", "<pad>"]
CHATML = (
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}<|im_end|>\n"
    "{% endgeneration %}{% else %}{{ message['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "the cat sat on the mat",
    "a dog ran in the park and the cat ran after it",
    "what is two and two? two and two is four",
    "hello there, how are you? I am well, thank you",
    "the bird sang a song in the morning",
]

TEXTS = [{"text": text} for text in CORPUS]
PROMPTS = [
    {"prompt": "what is two and two?", "completion": " four"},
    {"prompt": "the cat sat on", "completion": " the mat"},
    {"prompt": "", "completion": "hello there"},
]
CHATS = [
    {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hello there"},
            {"role": "user", "content": "what is two and two?"},
            {"role": "assistant", "content": "four"},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "where did the cat sit?"},
            {"role": "assistant", "content": "on the mat"},
        ]
    },
]
RECORDS = {"text": TEXTS, "prompt": PROMPTS, "messages": CHATS}


def lm_tokenizer_folder(
    directory: Path, *, bos: bool = True, pad: bool = False, chat_template: str | None = CHATML
) -> Path:
    """The tokenizer saved in `directory`: a BOS before each text (`bos`), a padding token (`pad`), a chat
    template (None: none)."""
    tokenizer = byte_level_bpe(CORPUS, vocab_size=BPE_VOCAB, special_tokens=SPECIALS)
    if bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
        )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>" if pad else None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    wrapped.chat_template = chat_template
    directory.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(directory)
    return directory


def byte_level_bpe(corpus: list[str], *, vocab_size: int, special_tokens: list[str]) -> Tokenizer:
    """Byte-level BPE (GPT-2's kind: every byte has an id, so any text encodes) trained on `corpus`, the
    special tokens first."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


def write_jsonl(path: Path, records: list) -> Path:
    """Dicts and lists are written as JSON, strings as they are."""
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in records))
    return path


def write_parquet(path: Path, records: list[dict], row_group_size: int | None = None) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=row_group_size)
    return path
