"""The `transformer` family: a BERT-style encoder classifier over token ids (0 = padding).

Post-norm encoder layers (Devlin et al. 2019) with attention written out in plain ops, so the
attention probabilities exist as a tensor, the output of `layers.{i}.attention.probs`, that a
forward hook captures. Feature distillation reaches the other intermediate outputs by name too; see
`capture_points`.
"""

import math

import torch
from torch import Tensor, nn

from engine.plan.specs import TransformerSpec

PADDING_ID = 0


class Embeddings(nn.Module):
    """Token plus learned position embeddings, then LayerNorm and dropout."""

    def __init__(self, spec: TransformerSpec):
        super().__init__()
        self.max_length = spec.max_length
        self.tokens = nn.Embedding(spec.vocab_size, spec.hidden_size, padding_idx=PADDING_ID)
        self.positions = nn.Embedding(spec.max_length, spec.hidden_size)
        self.norm = nn.LayerNorm(spec.hidden_size)
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, input_ids: Tensor) -> Tensor:
        length = input_ids.shape[1]
        if length > self.max_length:
            raise ValueError(f"input has {length} tokens per sequence but max_length is {self.max_length}")
        return self.dropout(self.norm(self.tokens(input_ids) + self.positions.weight[:length]))


class MaskedSoftmax(nn.Module):
    """Attention scores -> probabilities [B, heads, L, L], with no attention to padded keys.

    A module of its own so that a forward hook on it captures the probabilities, also in a
    torch.export program unflattened with `torch.export.unflatten` (where a module that computes
    nothing, like nn.Identity, leaves no call to hook).
    """

    def forward(self, scores: Tensor, padding_mask: Tensor) -> Tensor:
        # The most negative finite value rather than -inf: a sequence of padding only gets uniform
        # probabilities instead of NaN.
        scores = scores.masked_fill(padding_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        return scores.softmax(dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.probs = MaskedSoftmax()
        self.probs_dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, hidden_size)
        self.output_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        query, key, value = (self._split_heads(project(x)) for project in (self.query, self.key, self.value))
        scores = query @ key.transpose(-2, -1) / math.sqrt(self.head_size)
        probs = self.probs(scores, padding_mask)
        context = self.probs_dropout(probs) @ value
        return self.output_dropout(self.output(context.transpose(1, 2).flatten(2)))

    def _split_heads(self, x: Tensor) -> Tensor:
        """[B, L, H] -> [B, heads, L, H / heads]."""
        return x.unflatten(-1, (self.num_heads, self.head_size)).transpose(1, 2)


class EncoderLayer(nn.Module):
    """Self-attention and a GELU feed-forward block, each followed by residual add and LayerNorm."""

    def __init__(self, spec: TransformerSpec):
        super().__init__()
        self.attention = SelfAttention(spec.hidden_size, spec.num_heads, spec.dropout)
        self.attention_norm = nn.LayerNorm(spec.hidden_size)
        self.feed_forward = nn.Sequential(
            nn.Linear(spec.hidden_size, spec.intermediate_size),
            nn.GELU(),
            nn.Linear(spec.intermediate_size, spec.hidden_size),
            nn.Dropout(spec.dropout),
        )
        self.output_norm = nn.LayerNorm(spec.hidden_size)

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        x = self.attention_norm(x + self.attention(x, padding_mask))
        return self.output_norm(x + self.feed_forward(x))


class TransformerClassifier(nn.Module):
    """input_ids [B, L] (int64, L <= max_length, 0 = padding) -> logits [B, num_classes]."""

    def __init__(self, spec: TransformerSpec):
        super().__init__()
        self.pooling = spec.pooling
        self.embeddings = Embeddings(spec)
        self.layers = nn.ModuleList(EncoderLayer(spec) for _ in range(spec.num_layers))
        self.dropout = nn.Dropout(spec.dropout)
        self.head = nn.Linear(spec.hidden_size, spec.num_classes)

    def forward(self, input_ids: Tensor) -> Tensor:
        padding_mask = input_ids == PADDING_ID
        hidden = self.embeddings(input_ids)
        for layer in self.layers:
            hidden = layer(hidden, padding_mask)
        return self.head(self.dropout(pool(hidden, padding_mask, self.pooling)))


def pool(hidden: Tensor, padding_mask: Tensor, pooling: str) -> Tensor:
    """[B, L, H] -> [B, H]: the first token's state, or the mean over the tokens that are not padding."""
    if pooling == "cls":
        return hidden[:, 0]
    keep = (~padding_mask).unsqueeze(-1).to(hidden.dtype)
    return (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)


def capture_points(spec: TransformerSpec) -> dict:
    """Module paths whose forward-hook outputs TinyBERT distillation compares.

    `embeddings`: [B, L, H]; `hidden[i]`: layer i's output [B, L, H]; `attention[i]`: layer i's
    attention probabilities [B, heads, L, L].
    """
    layers = [f"layers.{index}" for index in range(spec.num_layers)]
    return {
        "embeddings": "embeddings",
        "hidden": layers,
        "attention": [f"{layer}.attention.probs" for layer in layers],
    }
