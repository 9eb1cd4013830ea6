"""What a `transformers` model of an `HFSpec` costs, measured on the meta device (shapes, no memory): its
parameters, exactly, and the floats one sample's training forward pass keeps for the backward pass.

A causal language model's pass is the wrapper's (`HFCausalLM`): token ids to final hidden states, without
the `[max_length, vocab]` logits, which the token-level losses form a chunk of tokens at a time (their
memory is bounded by the chunk, `engine.losses.token_level.CHUNK_LOGITS`, not by the sequence).

With a LoRA config, also the adapters' parameters (`adapter_parameters`), which alone train: peft injects
them into the meta model as it does into the student.

The API, which never imports torch, runs this as `python -m engine.models.hf.sizing` with a JSON list of
`{"spec": HFSpec, "lora": LoraConfig or null}` on stdin (and a timeout); for each it prints
`{"parameters": .., "activation_floats": .., "adapter_parameters": .. or null}`, or `{"error": ..}` with the
reason for a config that does not build or would be too large to build at all.
"""

import json
import math
import sys
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode

from engine.models.hf.build import build_hf_model
from engine.models.hf.lora import with_adapters
from engine.plan.errors import JobFailed
from engine.plan.sizes import FLOAT_BYTES
from engine.plan.specs import HFSpec, LoraConfig

# Refused before anything is built: building the modules of a larger model takes the measuring process's
# memory and time, though its tensors take none.
MAX_PARAMETERS = 10**11
# A batch of two: BatchNorm in training refuses one sample where a feature map is 1x1. Counts are per sample.
PROBE_BATCH = 2
# Config keys that count layers and that give widths, for the estimate checked before building. A channel
# multiplier scales a base width: MobileNet's and EfficientNet's last convolution has 1280 channels.
LAYER_KEYS = ("num_hidden_layers", "n_layers", "n_layer", "num_layers", "depths")
WIDTH_KEYS = (
    "hidden_size",
    "n_embd",
    "n_inner",
    "dim",
    "embed_dim",
    "embedding_size",
    "intermediate_size",
    "hidden_dim",
    "hidden_sizes",
    "neck_hidden_sizes",
    "pooler_hidden_size",
)
MULTIPLIER_KEYS = ("depth_multiplier", "width_coefficient")
MULTIPLIED_WIDTH = 1280


@dataclass(frozen=True)
class Sizes:
    parameters: int
    activation_floats: int
    adapter_parameters: int | None = None  # a LoRA student's adapters


class TooLarge(ValueError):
    """The config would build a model beyond MAX_PARAMETERS."""


def measure(spec: HFSpec, lora: LoraConfig | None = None) -> Sizes:
    """The spec's parameters (as the built model counts them) and its activation floats per sample (an
    estimate from above: every tensor autograd saves in a training forward pass, parameters left out, each
    storage once); with `lora`, its adapters' parameters (None where they target no module). Raises TooLarge
    before building a model beyond MAX_PARAMETERS."""
    check_buildable(spec)
    with torch.device("meta"):
        model = build_hf_model(spec, attn_implementation="eager")
    parameters = sum(parameter.numel() for parameter in model.parameters())
    activations = math.ceil(_saved_floats(model.train(), _probe(spec)) / PROBE_BATCH)
    if lora is None:
        return Sizes(parameters, activations)
    try:
        with torch.device("meta"):
            adapted = with_adapters(model.model, lora)
    except JobFailed:  # adapters that target no module: the job's rules refuse them, naming the field
        return Sizes(parameters, activations)
    adapters = sum(parameter.numel() for parameter in adapted.parameters() if parameter.requires_grad)
    return Sizes(parameters, activations, adapters)


def check_buildable(spec: HFSpec) -> None:
    """Raises TooLarge where the config's layers and widths make a model of more than MAX_PARAMETERS."""
    estimate = rough_parameters(spec.config)
    if estimate > MAX_PARAMETERS:
        raise TooLarge(
            f"the {spec.model_type} config's layers and widths make a model of some {estimate:.1e} "
            f"parameters, more than the {MAX_PARAMETERS:.0e} any job here trains: check num_hidden_layers, "
            "hidden_size and the other sizes of the config"
        )


def rough_parameters(config: dict) -> float:
    """The parameters, roughly, from the sizes alone (for the guard, not for the job's bounds): per layer
    twelve width^2 (a transformer layer's four projections and its 4x feed-forward; a 3x3 convolution's
    nine), the widest width for all, plus the embeddings of the vocabulary, positions and image patches."""
    layers = max([1.0, *(sum(_numbers(config.get(key))) for key in LAYER_KEYS)])
    widths = [number for key in WIDTH_KEYS for number in _numbers(config.get(key))]
    widths += [MULTIPLIED_WIDTH * number for key in MULTIPLIER_KEYS for number in _numbers(config.get(key))]
    width = max([1.0, *widths])
    patches = (
        max(_numbers(config.get("image_size")) or [0]) / max(_numbers(config.get("patch_size")) or [1])
    ) ** 2
    tokens = sum(
        max(_numbers(config.get(key)) or [0])
        for key in ("vocab_size", "max_position_embeddings", "n_positions")
    )
    return 12 * layers * width**2 + (tokens + patches) * width


def _numbers(value: object) -> list[float]:
    values = value if isinstance(value, list) else [value]
    return [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool) and v > 0]


def _probe(spec: HFSpec) -> Tensor:
    if spec.task == "image":
        return torch.zeros((PROBE_BATCH, *spec.input_shape), device="meta")
    return torch.zeros((PROBE_BATCH, spec.max_length), dtype=torch.long, device="meta")


def _saved_floats(model: nn.Module, probe: Tensor) -> int:
    """Float32s' worth of the tensors autograd saves in one forward pass of `probe`, parameters and buffers
    left out.

    The meta model runs on fake tensors, which transformers takes for tracing: it skips the checks of
    values (is the mask all ones?) that no meta tensor has."""
    weights = {id(tensor) for tensor in (*model.parameters(), *model.buffers())}  # saved as themselves
    counted: set[int] = set()
    saved_bytes = 0

    def count(tensor: Tensor) -> Tensor:
        nonlocal saved_bytes
        storage = tensor if tensor._base is None else tensor._base  # a view keeps its base alive
        if id(storage) not in weights and id(storage) not in counted:
            counted.add(id(storage))  # alive while autograd holds it, so no other tensor takes its id
            saved_bytes += storage.numel() * storage.element_size()
        return tensor

    with FakeTensorMode(allow_non_fake_inputs=True), torch.autograd.graph.saved_tensors_hooks(count, _same):
        model(probe)
    return math.ceil(saved_bytes / FLOAT_BYTES)


def _same(tensor: Tensor) -> Tensor:
    return tensor


def main() -> None:
    answers = []
    for document in json.loads(sys.stdin.read()):
        lora = document["lora"] and LoraConfig.model_validate(document["lora"])
        try:
            answers.append(asdict(measure(HFSpec.model_validate(document["spec"]), lora)))
        except Exception as error:  # the answer to the API: why this spec has no sizes
            answers.append({"error": f"{type(error).__name__}: {error}"})
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
