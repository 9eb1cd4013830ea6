"""The causal language model `benchmarks.llm` distils, made here with plain transformers and PyTorch and saved
as a user uploads one: a byte-level BPE tokenizer trained on tinyshakespeare's training text, a llama-style
model of a few million parameters trained on it, nanoGPT-style (blocks of the text, AdamW, cosine decay), and
the text's records and blocks as the jobs and the measurements read them."""

import math
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

EOS = "<|endoftext|>"


def paragraphs(text: str) -> list[str]:
    """The text's speeches (paragraphs between blank lines): one `text` record each."""
    return [part.strip("\n") for part in text.split("\n\n") if part.strip()]


def trained_tokenizer(text: str, vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (every text encodes; no unknown token) with one special token, the EOS that ends each
    record, and no padding token, as llama's and gpt2's tokenizers."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(paragraphs(text), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, bos_token=EOS)


def token_stream(tokenizer: PreTrainedTokenizerFast, records: list[str]) -> torch.Tensor:
    """The records' ids, each followed by the EOS, as one stream: how the service packs `text` records."""
    ids = []
    for encoded in tokenizer(records, add_special_tokens=False).input_ids:
        ids += encoded + [tokenizer.eos_token_id]
    return torch.tensor(ids)


def blocks(stream: torch.Tensor, length: int) -> torch.Tensor:
    """The stream cut into blocks of `length` ids [N, length], the rest dropped."""
    count = len(stream) // length
    return stream[: count * length].view(count, length)


def trained_llama(
    out: Path,
    tokenizer: PreTrainedTokenizerFast,
    train: torch.Tensor,
    config: dict,
    *,
    epochs: int,
    batch_size: int,
) -> tuple[Path, list[float]]:
    """A llama of `config` trained on the training blocks `train` [N, L]: AdamW (lr 1e-3, weight decay 0.1,
    betas 0.9/0.95), 5% warm-up then cosine decay to a tenth; saved with the tokenizer and a generation
    config. Returns the folder and each epoch's mean training loss."""
    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos, **config)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    steps = epochs * math.ceil(len(train) / batch_size)
    warmup = max(1, round(0.05 * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    losses = []
    model.train()
    for epoch in range(epochs):
        generator, started = torch.Generator().manual_seed(epoch), time.perf_counter()
        order, total = torch.randperm(len(train), generator=generator), 0.0
        for start in range(0, len(train), batch_size):
            batch = train[order[start : start + batch_size]]
            loss = model(input_ids=batch, labels=batch).loss  # transformers shifts the labels
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(batch)
        losses.append(total / len(train))
        seconds = time.perf_counter() - started
        print(f"teacher epoch {epoch + 1}/{epochs}: loss {losses[-1]:.3f} ({seconds:.0f} s)")
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, do_sample=True, top_k=50
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, losses


@torch.no_grad()
def perplexity(model, validation: torch.Tensor, batch_size: int = 32) -> float:
    """exp of the mean next-token cross-entropy over the validation blocks [N, L]: each token but a block's
    first, predicted from the ones before it in the block."""
    total, count = 0.0, 0
    for start in range(0, len(validation), batch_size):
        batch = validation[start : start + batch_size]
        logits = model(input_ids=batch[:, :-1]).logits.float()
        total += torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum"
        ).item()
        count += batch[:, 1:].numel()
    return math.exp(total / count)
