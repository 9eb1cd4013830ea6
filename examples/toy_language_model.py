"""Make a small causal language model and text to distil it on, as a user holds them.

    .venv/bin/python examples/toy_language_model.py /tmp/distill-lm

writes my-llama/ (a `save_pretrained` folder: a 4-layer llama of a quarter of a million parameters with its
byte-level BPE tokenizer, trained for half a minute on sentences made here), train.jsonl and validation.jsonl
(`text` records) and job.yaml, the job the README's tour runs: a student with half the teacher's layers,
distilled token by token.
"""

import json
import random
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

EOS = "<|endoftext|>"
JOB = """\
teacher: {file: my-llama}
student: {derive: {depth: 0.5}}
dataset: {train_file: train.jsonl, validation_file: validation.jsonl, max_length: 32}
distillation: {divergence: forward_kl, alpha: 0.5, beta: 0.5}
training: {epochs: 3, batch_size: 16, learning_rate: 0.002}
gates:
  - {metric: kl_to_teacher, op: "<", value: 1.0}
"""
SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "the bird", "a child"]
VERBS = ["sat on", "looked at", "ran past", "slept under", "sang to", "walked by"]
OBJECTS = ["the mat", "a tree", "the river", "an old house", "the moon", "a red door"]


def sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(count)]


def tokenizer_for(texts: list[str]) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, bos_token=EOS)


def trained_llama(tokenizer: PreTrainedTokenizerFast, texts: list[str], steps: int = 150) -> LlamaForCausalLM:
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=172, num_hidden_layers=4,
                    num_attention_heads=4, max_position_embeddings=64, bos_token_id=eos, eos_token_id=eos)
    )  # fmt: skip
    ids = [token for text in texts for token in tokenizer(text).input_ids + [eos]]
    blocks = torch.tensor(ids[: len(ids) // 32 * 32]).view(-1, 32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(steps):
        batch = blocks[torch.randint(len(blocks), (16,), generator=torch.Generator().manual_seed(step))]
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    train, validation = sentences(2000, seed=0), sentences(200, seed=1)
    tokenizer = tokenizer_for(train)
    trained_llama(tokenizer, train).save_pretrained(folder / "my-llama")
    tokenizer.save_pretrained(folder / "my-llama")
    for name, texts in (("train", train), ("validation", validation)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    (folder / "job.yaml").write_text(JOB)
    print(f"wrote {folder}/my-llama, train.jsonl, validation.jsonl and job.yaml")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/distill-lm"))
