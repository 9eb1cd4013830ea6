"""Which `transformers` models the service takes, and the rules a model's config (`config.json`) must keep.

Torch-free (and transformers-free): the API checks an uploaded folder's config and a requested student's
with these rules before any worker builds one. A `model_type` names a family of `transformers`; its task is
the head the service builds on it: `text` (`AutoModelForSequenceClassification`, token ids in), `image`
(`AutoModelForImageClassification`, pixels in) or `causal-lm` (`AutoModelForCausalLM`, token ids in, the
next token's logits at every position out). The server's `DISTILL_HF_MODEL_TYPES` narrows the table.
"""

import json
import math
from typing import Literal

HFTask = Literal["text", "image", "causal-lm"]
PRETRAINED_ARTIFACT = "student.hf.zip"  # a transformers student's save_pretrained folder, zipped
LORA_ARTIFACT = "student.lora.zip"  # a LoRA student's adapter as peft saves it, zipped

TEXT_MODEL_TYPES = (
    "albert",
    "bert",
    "camembert",
    "deberta",
    "deberta-v2",
    "distilbert",
    "electra",
    "ernie",
    "megatron-bert",
    "mobilebert",
    "modernbert",
    "mpnet",
    "roberta",
    "roberta-prelayernorm",
    "xlm-roberta",
)
IMAGE_MODEL_TYPES = (
    "beit",
    "bit",
    "convnext",
    "convnextv2",
    "deit",
    "dinov2",
    "efficientnet",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilevit",
    "regnet",
    "resnet",
    "swin",
    "vit",
)
# Decoders whose logits are their LM head's linear map of the final hidden states, nothing after it (no
# soft-capping or scaling): the token-level losses compute them from those a chunk at a time.
CAUSAL_LM_MODEL_TYPES = ("gpt2", "llama", "mistral", "phi3", "qwen2", "qwen3")
HF_TASKS: dict[str, HFTask] = (
    dict.fromkeys(TEXT_MODEL_TYPES, "text")
    | dict.fromkeys(IMAGE_MODEL_TYPES, "image")
    | dict.fromkeys(CAUSAL_LM_MODEL_TYPES, "causal-lm")
)

MAX_CONFIG_BYTES = 4 * 1024 * 1024  # ImageNet-21k's 21,843 labels take some 600 KB of id2label
# Config fields that size a model (layers, widths, heads, positions, vocabulary). One above this is no model
# the service could train: refused before anything is built from it.
MAX_CONFIG_SIZE = 1_000_000
# Layers in all (a list such as ResNet's `depths` counts its sum): each is a module built and counted at
# submission, and a 900,000-layer config would take minutes and gigabytes before any bound could say no.
LAYER_KEYS = ("num_hidden_layers", "n_layers", "n_layer", "num_layers", "depths", "encoder_layers")
MAX_LAYERS = 512
# Keys that would make transformers import code shipped with the model: never followed here.
REMOTE_CODE_KEYS = ("auto_map", "custom_pipelines")


class HFConfigRejected(ValueError):
    """The config is no model the service builds; the message says why and what to do."""


def check_hf_config(config: object, allowed: tuple[str, ...] | None = None) -> HFTask:
    """The task of the model that `config` (a parsed `config.json`) describes; raises HFConfigRejected.

    `allowed`: the model types the server takes (default: all of `HF_TASKS`)."""
    if not isinstance(config, dict):
        raise HFConfigRejected("a model config must be a JSON object (what config.json holds)")
    model_type = config.get("model_type")
    permitted = HF_TASKS if allowed is None else [name for name in allowed if name in HF_TASKS]
    if not isinstance(model_type, str) or model_type not in permitted:
        raise HFConfigRejected(
            f"model_type {model_type!r} is not one this server takes; it takes these model types of "
            f"transformers: {', '.join(sorted(permitted))}"
        )
    remote = [key for key in REMOTE_CODE_KEYS if key in config]
    if remote:
        raise HFConfigRejected(
            f"the config names code shipped with the model ({', '.join(remote)}), which this server never "
            "runs (trust_remote_code is off): remove those keys and use a model_type of transformers"
        )
    if len(json.dumps(config)) > MAX_CONFIG_BYTES:
        raise HFConfigRejected(f"the config takes more than {MAX_CONFIG_BYTES} bytes of JSON")
    for key, value in config.items():
        _check_size_field(key, value)
    _check_layers(config)
    return HF_TASKS[model_type]


def _check_layers(config: dict) -> None:
    for key in LAYER_KEYS:
        value = config.get(key)
        layers = sum(value) if isinstance(value, list) and all(isinstance(v, int) for v in value) else value
        if isinstance(layers, int) and layers > MAX_LAYERS:
            raise HFConfigRejected(
                f"config field {key} asks for {layers:,} layers, more than any model this server trains "
                f"(at most {MAX_LAYERS}): check the config"
            )


def _check_size_field(key: str, value: object) -> None:
    sizes = value if isinstance(value, list) else [value]
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int | float):
            return
        if isinstance(size, float) and not math.isfinite(size):
            raise HFConfigRejected(f"config field {key} is {size}: give a finite number")
        if abs(size) > MAX_CONFIG_SIZE and _sizes_the_model(key):
            raise HFConfigRejected(
                f"config field {key} is {size}, more than any model this server trains "
                f"(at most {MAX_CONFIG_SIZE:,}): check the config"
            )


def _sizes_the_model(key: str) -> bool:
    name = key.lower()
    return (
        name.startswith(("num_", "n_"))
        or name.endswith(("_size", "_sizes", "_layers", "_heads", "_dim", "_embeddings", "depths"))
        or name in {"dim", "hidden_dim", "depths", "embedding_size"}
    )
