"""Where a wrapped `transformers` model's numbered outputs are (`hidden_states.N`, `attentions.N`; see
`engine.plan.hf_layers`): the module a forward hook reads, and what of it."""

import inspect
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedModel

from engine.plan.errors import JobFailed
from engine.plan.hf_layers import ATTENTIONS, HF_LAYERS, HIDDEN_STATES, numbered, parse_numbered


@dataclass(frozen=True)
class TapPoint:
    """A tapped tensor: element `index` of the output of the module at `path` (the output itself where it
    is one tensor), or with `reads_input` the module's first input; with `requests_attentions` the module
    is called with output_attentions=True, without which it returns no attention probabilities."""

    path: str
    index: int = 0
    reads_input: bool = False
    requests_attentions: bool = False


def tap_point(model: nn.Module, name: str, role: str) -> TapPoint:
    """Where `name` is read in `model` (the `role` in messages): a module path as it is, or a numbered output
    of a transformers model; `unknown_layer` for a numbered output the model does not have."""
    parsed = parse_numbered(name)
    transformers_model = getattr(model, "model", None)
    if parsed is None or not isinstance(transformers_model, PreTrainedModel):
        return TapPoint(name)
    model_type = transformers_model.config.model_type
    layout = HF_LAYERS.get(model_type)
    if layout is None:
        raise JobFailed(
            "unknown_layer",
            f"the {role} ({model_type}) has no numbered output {name}: transformers gives no hook one "
            f"module per layer of a {model_type}; hidden_states.N and attentions.N are reached on "
            f"{', '.join(sorted(HF_LAYERS))}. Name one of its modules instead.",
        )
    base = f"model.{transformers_model.base_model_prefix}"
    layers = f"{base}.{layout.layers}"
    count = len(model.get_submodule(layers))
    kind, index = parsed
    if kind == HIDDEN_STATES and index <= count:
        if index == 0:
            return TapPoint(f"{layers}.0", reads_input=True)
        if index == count and layout.final_norm is not None:
            return TapPoint(f"{base}.{layout.final_norm}")
        return TapPoint(f"{layers}.{index - 1}")
    if kind == ATTENTIONS and index < count and layout.attention is not None:
        path = f"{layers}.{index}.{layout.attention}"
        return TapPoint(path, index=1, requests_attentions=layout.attentions_on_request)
    outputs = f"{numbered(HIDDEN_STATES, 0)} to {numbered(HIDDEN_STATES, count)}"
    if layout.attention is not None:
        outputs += f" and {numbered(ATTENTIONS, 0)} to {numbered(ATTENTIONS, count - 1)}"
    raise JobFailed(
        "unknown_layer",
        f"the {role} ({model_type}, {count} layers) has no {name}: its numbered outputs are {outputs}",
    )


def attention_implementation(names: Iterable[str]) -> str | None:
    """`eager` where some of `names` are attention probabilities, which only eager attention computes as
    tensors; None (transformers' choice) otherwise."""
    kinds = {parsed[0] for parsed in map(parse_numbered, names) if parsed is not None}
    return "eager" if ATTENTIONS in kinds else None


def request_attentions(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A forward pre-hook (`with_kwargs`) that calls `module` with output_attentions=True, whether its caller
    passes the flag by position or by name."""
    bound = inspect.signature(module.forward).bind(*args, **kwargs)
    bound.arguments["output_attentions"] = True
    return bound.args, bound.kwargs
