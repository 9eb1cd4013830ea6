"""A tiny text task for transformer tests: does token MARK occur in the sequence? Generated token ids,
the same sequences as JSON Lines text, and a word-level tokenizer that maps each text back to its ids."""

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers

from engine.models.registry import build_model
from engine.plan.specs import TransformerSpec

VOCAB, LENGTH, MARK = 16, 12, 5  # ids 0 ([PAD]) and 1 ([UNK]) never occur in generated sequences

TEACHER_SPEC = TransformerSpec(
    vocab_size=VOCAB, max_length=LENGTH, num_classes=2, hidden_size=32, num_layers=2, num_heads=2,
    intermediate_size=64, dropout=0.0, pooling="mean",
)  # fmt: skip
STUDENT_SPEC = TransformerSpec(
    vocab_size=VOCAB, max_length=LENGTH, num_classes=2, hidden_size=16, num_layers=1, num_heads=2,
    intermediate_size=32, dropout=0.0, pooling="mean",
)  # fmt: skip


def marked_sequences(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids [N, LENGTH]: 4 to LENGTH tokens from 2..VOCAB-1, then padding (0); label 1 (half of them):
    MARK occurs."""
    rng = np.random.default_rng(seed)
    x = np.zeros((num_samples, LENGTH), dtype=np.int64)
    y = rng.integers(0, 2, num_samples)
    others = [token for token in range(2, VOCAB) if token != MARK]
    for row in range(num_samples):
        length = rng.integers(4, LENGTH + 1)
        x[row, :length] = rng.choice(others, size=length)
        if y[row]:
            x[row, rng.integers(0, length)] = MARK
    return x, y


def word_tokenizer() -> Tokenizer:
    """Word `t<i>` is id i, so texts written by `write_jsonl` tokenize back to their ids; [PAD] is 0."""
    vocab = {"[PAD]": 0, "[UNK]": 1} | {f"t{token}": token for token in range(2, VOCAB)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def write_jsonl(path: Path, x: np.ndarray, y: np.ndarray | None = None) -> Path:
    """One `{"text": "t3 t9 ...", "label": 1}` line per sequence (padding left out)."""
    lines = []
    for row, ids in enumerate(x):
        record = {"text": " ".join(f"t{token}" for token in ids if token)}
        if y is not None:
            record["label"] = int(y[row])
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


def train_text_teacher(x: np.ndarray, y: np.ndarray, steps: int = 100) -> torch.nn.Module:
    """A TEACHER_SPEC transformer that finds MARK (accuracy ~1 after 100 steps), in eval mode.

    On one thread: for a model this small, more threads only add overhead, and on a busy machine
    contention makes them many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        teacher = build_model(TEACHER_SPEC)
        optimizer = torch.optim.Adam(teacher.parameters(), lr=3e-3)
        ids, labels = torch.from_numpy(x), torch.from_numpy(y)
        generator = torch.Generator().manual_seed(0)
        for _ in range(steps):
            batch = torch.randint(0, len(x), (64,), generator=generator)
            loss = F.cross_entropy(teacher(ids[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return teacher.eval()
