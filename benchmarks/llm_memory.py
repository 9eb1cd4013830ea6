"""What the token-level loss holds at its peak, chunked as jobs run it and in one piece, at growing
vocabularies.

Each measurement runs in a fresh process: a student's final hidden states `[tokens, hidden]` (requiring
grad, as a model's output does) and an LM head `[vocab, hidden]` with its gradient buffer already
allocated, then one forward and backward of `token_level_losses` against a teacher given by its hidden
states and head (the way a job's teacher comes). The figure is the process's peak resident memory (its
high-water mark, reset right before) above what it held before the loss: the logits and everything computed
from them, not the models. The chunk holds 2^24 logits (64 MiB in float32) whatever the vocabulary, so the
chunked peak should stay flat as the vocabulary grows, where the unchunked one grows with tokens x
vocabulary.

    .venv/bin/python -m benchmarks.llm_memory [--tokens 4096] [--hidden 256]
"""

import argparse
import json
import subprocess
import sys

VOCABULARIES = (8_192, 32_768, 131_072)
MIB = 2**20


def measure(tokens: int, hidden: int, vocab: int, chunked: bool) -> dict:
    """In this process: the peak RSS growth of one forward and backward of the loss, in MiB."""
    import torch

    from engine.losses.token_divergences import forward_kl
    from engine.losses.token_level import CHUNK_LOGITS, LMHead, TeacherHead, token_level_losses
    from engine.runtime.memory import peak_memory, reset_peak_memory, resident_bytes

    torch.set_num_threads(1)
    torch.manual_seed(0)
    student_hidden = torch.randn(tokens, hidden, requires_grad=True)
    weight = (torch.randn(vocab, hidden) * 0.02).requires_grad_()
    weight.grad, student_hidden.grad = torch.zeros_like(weight), torch.zeros_like(student_hidden)
    teacher = TeacherHead(torch.randn(tokens, hidden), LMHead(torch.randn(vocab, hidden) * 0.02))
    labels = torch.randint(vocab, (tokens,))
    reset_peak_memory(torch.device("cpu"))  # the high-water mark back to what is resident now
    before = resident_bytes()
    losses = token_level_losses(
        hidden=student_hidden,
        head=LMHead(weight),
        labels=labels,
        teacher=teacher,
        divergence=forward_kl,
        temperature=1.0,
        chunk_tokens=None if chunked else tokens,
    )
    (losses.divergence + losses.cross_entropy).backward()
    peak = peak_memory(torch.device("cpu"))["process_bytes"]
    chunk_tokens = max(1, CHUNK_LOGITS // vocab) if chunked else tokens
    return {
        "vocab": vocab,
        "chunked": chunked,
        "chunk_tokens": min(chunk_tokens, tokens),
        "chunk_logits_mib": round(min(chunk_tokens, tokens) * vocab * 4 / MIB, 1),
        "peak_growth_mib": round((peak - before) / MIB, 1),
    }


def in_a_child(tokens: int, hidden: int, vocab: int, chunked: bool) -> dict:
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.llm_memory",
            "--child",
            json.dumps([tokens, hidden, vocab, chunked]),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return json.loads(ran.stdout.splitlines()[-1])


def memory_figures(tokens: int, hidden: int) -> list[dict]:
    return [in_a_child(tokens, hidden, vocab, chunked) for vocab in VOCABULARIES for chunked in (True, False)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=4096, help="tokens of the batch (e.g. 8 x 512)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return
    for row in memory_figures(args.tokens, args.hidden):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
