"""A `transformers` model as the engine calls it: a classifier as every model, one tensor in, logits out; a
causal language model token ids in, its final hidden states out, whose logits the token-level losses take
from its LM head a chunk of tokens at a time.

The `transformers` model is the wrapper's `.model`, so its layers keep their names under `model.`
(`model.bert.encoder.layer.1`) for forward hooks, checkpoints and `save_pretrained`. The classifiers'
forward passes have no data-dependent control flow, so both export with torch.export (and from there to ONNX).
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel


class HFTextClassifier(nn.Module):
    """token ids [N, L] (int64, `pad_token_id` where there is no token) -> logits [N, num_classes].

    The attention mask is every position that is not padding. A model with token types (BERT's
    `type_vocab_size` 2) gets them from the first `sep_token_id`: in `[CLS] A [SEP] B [SEP]` the second text
    and its final separator are segment 1, as BERT's tokenizer makes pairs; without a known separator, all 0.
    """

    def __init__(self, model: PreTrainedModel, pad_token_id: int, sep_token_id: int | None):
        super().__init__()
        self.model = model
        self.pad_token_id = pad_token_id
        has_segments = getattr(model.config, "type_vocab_size", 0) > 1
        self.sep_token_id = sep_token_id if has_segments else None

    def forward(self, input_ids: Tensor) -> Tensor:
        attention_mask = input_ids != self.pad_token_id
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask.long()}
        if self.sep_token_id is not None:
            inputs["token_type_ids"] = segment_ids(input_ids, attention_mask, self.sep_token_id)
        return self.model(**inputs).logits


def segment_ids(input_ids: Tensor, attention_mask: Tensor, sep_token_id: int) -> Tensor:
    """1 after the first separator (which stays 0) up to the padding, 0 elsewhere."""
    is_sep = (input_ids == sep_token_id).long()
    seps_before = is_sep.cumsum(dim=1) - is_sep
    return ((seps_before > 0) & attention_mask).long()


class HFImageClassifier(nn.Module):
    """images [N, C, H, W] with values in [0, 1] -> logits [N, num_classes], normalised inside with the
    model's own per-channel `mean` and `std` (buffers, not in the state dict: they come from the spec)."""

    def __init__(self, model: PreTrainedModel, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    def forward(self, pixels: Tensor) -> Tensor:
        return self.model(pixel_values=(pixels - self.mean) / self.std).logits


class HFCausalLM(nn.Module):
    """token ids [N, L] (int64) and an attention mask [N, L] (1 where a token is, 0 at padding; default: all
    tokens) -> the final hidden states [N, L, hidden], through the model's final norm.

    The next token's logits at each position are `lm_head()`'s linear map of them (nothing follows it in the
    model types served, `hf_models.CAUSAL_LM_MODEL_TYPES`). The wrapper never forms them: `[N, L, vocab]`
    logits outweigh every other activation of a small model, so the loss computes them a chunk of tokens at a
    time. The head may be the token embeddings themselves (tied embeddings)."""

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        # Always a mask: without one, a model with a padding id looks into the ids for it (on the meta device
        # while sizing, where no tensor has values).
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        outputs = self.model.base_model(input_ids=input_ids, attention_mask=mask, use_cache=False)
        return outputs.last_hidden_state

    def lm_head(self) -> nn.Linear:
        """The output projection: logits = hidden states @ weight.T (+ bias)."""
        return self.model.get_output_embeddings()
