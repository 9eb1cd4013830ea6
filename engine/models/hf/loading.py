"""A `transformers` classifier or causal language model loaded from a `save_pretrained` folder (an `hf`
teacher, unpacked)."""

from pathlib import Path

import torch
from torch import nn

from engine.models.hf.build import AUTO_CLASSES, hf_config, wrap
from engine.models.hf.quiet import no_progress_bars
from engine.plan.errors import JobFailed, capped_list
from engine.plan.specs import HFSpec


def load_hf_model(folder: Path, spec: HFSpec, attn_implementation: str | None = None) -> nn.Module:
    """The spec's model with the folder's `model.safetensors` weights, wrapped, float32, in eval mode.

    The spec's config (read from the folder's `config.json` by the service) builds the model, so the model is
    the spec; only safetensors weights are read (never a pickle), and no code shipped with the model runs.
    Every tensor the model has must be in the weights with its shape: a checkpoint without the classifier
    (a base model, not fine-tuned) or of another size is refused (`teacher_load_failed`). Weights the model
    does not use (a pretraining head) are ignored; a causal language model whose LM head is its token
    embeddings (`tie_word_embeddings`) needs no `lm_head.weight`.
    """
    try:
        with no_progress_bars():
            model, loading = AUTO_CLASSES[spec.task].from_pretrained(
                folder,
                config=hf_config(spec),
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=True,
                dtype=torch.float32,
                attn_implementation=attn_implementation,
                ignore_mismatched_sizes=True,  # reported below, each with its shapes
                output_loading_info=True,
            )
    except Exception as error:  # whatever keeps transformers from reading the folder, the user fixes it
        raise JobFailed(
            "teacher_load_failed",
            f"the hf teacher ({spec.model_type}) could not be loaded from its save_pretrained folder: "
            f"{type(error).__name__}: {error}",
        ) from None
    problems = [f"missing {key}" for key in sorted(loading["missing_keys"])] + [
        f"{key}: weights {list(saved)} vs config {list(expected)}"
        for key, saved, expected in sorted(loading["mismatched_keys"])
    ]
    if problems:
        raise JobFailed(
            "teacher_load_failed",
            f"the hf teacher's model.safetensors does not match its config.json ({_described(spec)}): "
            f"{capped_list(problems)}. Upload the folder save_pretrained wrote for the {_kind(spec)}, whose "
            "config describes those weights.",
        )
    return wrap(model, spec).eval()


def _described(spec: HFSpec) -> str:
    if spec.task == "causal-lm":
        return f"{spec.model_type}, a vocabulary of {spec.num_classes:,}"
    return f"{spec.model_type}, {spec.num_classes} labels"


def _kind(spec: HFSpec) -> str:
    return "language model" if spec.task == "causal-lm" else "fine-tuned classifier"
