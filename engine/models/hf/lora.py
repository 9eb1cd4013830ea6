"""A LoRA student (Hu et al. 2021) through `peft`: low-rank adapters injected into the linear layers of the
wrapped transformers model in place, every other weight frozen. The engine's wrapper (`HFCausalLM`) calls
the model as before (its final hidden states, its LM head, `generate`); peft's model around it saves the
adapter and, at the end, merges it into plain weights."""

from dataclasses import dataclass

import peft
import torch
from torch import nn
from transformers import PreTrainedModel

from engine.plan.errors import JobFailed
from engine.plan.specs import LoraConfig

TARGETS_FIELD = "student.lora.target_modules"
# Where peft has no default target modules for a model type: the attention's fused projection (q, k and v).
DEFAULT_TARGETS = {"phi3": ["qkv_proj"]}
# Whose linear layers are transformers' Conv1D, of weights [in, out] (peft's `fan_in_fan_out`).
CONV1D_MODEL_TYPES = ("gpt2",)


@dataclass(frozen=True)
class LoraStudent:
    """A student's LoRA adapters: peft's model around the student's transformers model, and their figures
    (`lora_figures`)."""

    peft_model: peft.PeftModel
    figures: dict


def add_lora(model: nn.Module, config: LoraConfig, teacher: nn.Module) -> LoraStudent:
    """Inject the adapters of `config` into the wrapped transformers model `model.model` (in place), freezing
    every other weight; `teacher`, the wrapped teacher, tells whether the adapter applies to it."""
    base = "teacher" if same_weights(model, teacher) else "derived"  # what the adapter applies to
    peft_model = with_adapters(model.model, config)
    return LoraStudent(peft_model, lora_figures(peft_model, base))


def with_adapters(language_model: PreTrainedModel, config: LoraConfig) -> peft.PeftModel:
    """peft's model around `language_model`, the adapters of `config` injected into it in place (on the meta
    device too, where the service counts them); `unsupported_combination` where no module is targeted."""
    model_type = language_model.config.model_type
    lora = peft.LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules or DEFAULT_TARGETS.get(model_type),
        fan_in_fan_out=model_type in CONV1D_MODEL_TYPES,
        task_type=peft.TaskType.CAUSAL_LM,
    )
    try:
        return peft.get_peft_model(language_model, lora)
    except ValueError as error:  # no module matches a target
        raise JobFailed(
            "unsupported_combination",
            f"{TARGETS_FIELD}: {error}. Name the ends of the decoder layers' linear layers' names, such as "
            "`q_proj`.",
            TARGETS_FIELD,
        ) from None


def same_weights(model: nn.Module, other: nn.Module) -> bool:
    """Whether both models hold the same tensors under the same names."""
    ours, theirs = model.state_dict(), other.state_dict()
    return ours.keys() == theirs.keys() and all(
        ours[name].shape == theirs[name].shape and torch.equal(ours[name], theirs[name]) for name in ours
    )


def lora_figures(peft_model: peft.PeftModel, base: str) -> dict:
    """The adapters' settings and size, for the job's events and metrics, and what the adapter applies to
    (`base`: a key of `lora_adapters.ADAPTER_BASES`)."""
    config = peft_model.peft_config[peft_model.active_adapter]
    trainable, total = peft_model.get_nb_trainable_parameters()
    return {
        "r": config.r,
        "alpha": config.lora_alpha,
        "dropout": config.lora_dropout,
        "target_modules": sorted(config.target_modules),
        "trainable_parameters": trainable,
        "parameters": total,
        "base": base,
    }


def lora_summary(figures: dict) -> str:
    """The adapters in words, for the job's events."""
    trainable, total = figures["trainable_parameters"], figures["parameters"]
    return (
        f"LoRA student: adapters of rank {figures['r']} (alpha {figures['alpha']:g}) on "
        f"{', '.join(figures['target_modules'])} train {trainable:,} of its {total:,} parameters "
        f"({trainable / total:.2%}); the others stay as they started, frozen"
    )


def merge_lora(lora: LoraStudent) -> None:
    """The adapters added into the weights they adapt, the model's layers plain transformers ones again."""
    lora.peft_model.merge_and_unload()
