"""A causal language model student as ONNX: `student.onnx` maps token ids `[batch, length]` (any batch, any
length up to the student's max_length) to the next-token logits at every position `[batch, length, vocab]`,
the forward pass of transformers' model without its key-value cache (for scoring and prefill; generation
reruns it on the whole sequence). Checked against the PyTorch student on the validation blocks with ONNX
Runtime."""

from pathlib import Path

import torch
from torch import Tensor, nn

from engine.data.lm_text import IGNORE_INDEX, LMDataset
from engine.export.onnx_model import OnnxRunner, export_onnx

CHECKED_BLOCKS = 64  # of the validation set, run by both
BLOCKS_AT_ONCE = 4  # a batch's logits are [blocks, length, vocab]


class NextTokenLogits(nn.Module):
    """token ids -> the logits at every position, without the key-value cache."""

    def __init__(self, language_model: nn.Module):
        super().__init__()
        self.language_model = language_model

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.language_model(input_ids=input_ids, use_cache=False).logits


def export_language_model_onnx(language_model: nn.Module, max_length: int, out_dir: Path) -> Path:
    """`student.onnx` from the transformers model, in eval mode on the CPU."""
    logits = NextTokenLogits(language_model)
    example = torch.full((2, min(max_length, 8)), 1, dtype=torch.long)  # sizes 0 and 1 would be specialised
    dims = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("length", min=1, max=max_length)}
    program = torch.export.export(logits, (example,), dynamic_shapes={"input_ids": dims})
    return export_onnx(program, out_dir)


@torch.no_grad()
def language_model_onnx_metrics(path: Path, language_model: nn.Module, validation: LMDataset) -> dict:
    """Over the first CHECKED_BLOCKS validation blocks' tokens that count: how often the ONNX model's most
    likely next token is the PyTorch student's (`agreement`) and the label (`accuracy`), the largest logit
    difference from the transformers model (in eval mode on the CPU), and the file's size."""
    runner = OnnxRunner(path)
    blocks = validation.subset(slice(0, CHECKED_BLOCKS))
    agreements = correct = counted = 0
    largest = 0.0
    for start in range(0, len(blocks), BLOCKS_AT_ONCE):
        ids, labels = (
            blocks.ids[start : start + BLOCKS_AT_ONCE],
            blocks.labels[start : start + BLOCKS_AT_ONCE],
        )
        exported, student = runner(ids), language_model(input_ids=ids, use_cache=False).logits.float()
        counts = labels != IGNORE_INDEX
        predicted = exported.argmax(-1)
        agreements += int((predicted == student.argmax(-1))[counts].sum())
        correct += int((predicted == labels)[counts].sum())
        counted += int(counts.sum())
        largest = max(largest, float((exported - student).abs().max()))
    return {
        "accuracy": correct / max(counted, 1),
        "agreement": agreements / max(counted, 1),
        "max_abs_difference": largest,
        "bytes": path.stat().st_size,
    }
