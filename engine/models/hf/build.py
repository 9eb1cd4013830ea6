"""An `HFSpec` built: its `transformers` config, and the wrapped model at random initialisation."""

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)

from engine.models.hf.wrappers import HFCausalLM, HFImageClassifier, HFTextClassifier
from engine.plan.specs import HFSpec

AUTO_CLASSES = {
    "text": AutoModelForSequenceClassification,
    "image": AutoModelForImageClassification,
    "causal-lm": AutoModelForCausalLM,
}
# Without a mean and std in the spec, images go in as they are, in [0, 1].
NO_NORMALISATION = ([0.0], [1.0])


def hf_config(spec: HFSpec) -> PretrainedConfig:
    """The `transformers` config of the spec's model, with a classifier's labels (`num_labels`, and the
    config's `id2label` and `label2id` where it names them); a causal language model's as it is."""
    fields = {key: value for key, value in spec.config.items() if key not in ("model_type", "num_labels")}
    # transformers picks the head of a model type with several (DeiT's) by `architectures`, and fails on null.
    fields["architectures"] = fields.get("architectures") or []
    if spec.task == "causal-lm":
        return AutoConfig.for_model(spec.model_type, **fields)
    labels = fields.get("id2label")
    if labels is not None and len(labels) != spec.num_classes:
        raise ValueError(
            f"the config names {len(labels)} labels (id2label) but the spec has num_classes "
            f"{spec.num_classes}: make them agree"
        )
    return AutoConfig.for_model(spec.model_type, num_labels=spec.num_classes, **fields)


def build_hf_model(spec: HFSpec, attn_implementation: str | None = None) -> nn.Module:
    """The spec's model at random initialisation (from torch's random state), wrapped, float32. Never with
    code shipped with a model: `from_config` builds transformers' own classes.

    `attn_implementation`: transformers' choice by default (`sdpa` where the model has it); `eager`
    where the attention probabilities must exist as tensors (TinyBERT)."""
    model = AUTO_CLASSES[spec.task].from_config(
        hf_config(spec), attn_implementation=attn_implementation, dtype=torch.float32
    )
    return wrap(model, spec)


def wrap(model: PreTrainedModel, spec: HFSpec) -> nn.Module:
    """The model taking the engine's inputs: token ids padded with the spec's `pad_token_id` (its
    `sep_token_id` marks pairs), images in [0, 1] normalised with its `image_mean` and `image_std`, or a
    causal language model's token ids and attention mask."""
    if spec.task == "causal-lm":
        return HFCausalLM(model)
    if spec.task == "text":
        config = model.config
        if config.pad_token_id is None:
            raise ValueError(
                f"the {spec.model_type} config has no pad_token_id: set it to the tokenizer's padding id"
            )
        return HFTextClassifier(model, config.pad_token_id, getattr(config, "sep_token_id", None))
    mean, std = NO_NORMALISATION
    return HFImageClassifier(model, spec.image_mean or mean, spec.image_std or std)
