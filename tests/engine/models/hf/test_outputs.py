"""A transformers model's numbered outputs by name: `hidden_states.N` and `attentions.N` tapped are what
transformers returns with output_hidden_states and output_attentions, for every model type that has them."""

import pytest
import torch

from engine.models.hf.build import build_hf_model
from engine.models.hooks import LayerTaps
from engine.plan.errors import JobFailed
from engine.plan.hf_layers import HF_LAYERS
from engine.plan.hf_models import HF_TASKS
from tests.engine.hf_factories import tiny_inputs, tiny_spec
from tests.lm_model_factories import lm_spec, lm_token_ids

LAYERS = 4  # the tiny text encoders' and ViTs'; 2 stages in the others


def run_both_ways(model_type: str):
    """The model's numbered outputs tapped by name, and as transformers returns them; a language model's
    logits from its final hidden states."""
    if HF_TASKS[model_type] == "causal-lm":
        return _run_language_model_both_ways(model_type)
    spec = tiny_spec(model_type)
    torch.manual_seed(0)
    model = build_hf_model(spec, attn_implementation="eager").eval()
    layout = HF_LAYERS[model_type]
    count = LAYERS if layout.attention is not None else 2
    names = [f"hidden_states.{index}" for index in range(count + 1)]
    if layout.attention is not None:
        names += [f"attentions.{index}" for index in range(count)]
    taps = LayerTaps(model, names, "teacher")
    x = tiny_inputs(spec)
    with torch.no_grad():
        tapped = model(x)
        if spec.task == "text":
            inputs = {"input_ids": x, "attention_mask": (x != model.pad_token_id).long()}
        else:
            inputs = {"pixel_values": (x - model.mean) / model.std}
        outputs = model.model(
            **inputs, output_hidden_states=True, output_attentions=layout.attention is not None
        )
    return taps, tapped, outputs.logits, outputs.hidden_states, getattr(outputs, "attentions", None) or ()


def _run_language_model_both_ways(model_type: str):
    spec = lm_spec(model_type)
    torch.manual_seed(0)
    model = build_hf_model(spec).eval()
    count = spec.config.get("num_hidden_layers") or spec.config["n_layer"]
    taps = LayerTaps(model, [f"hidden_states.{index}" for index in range(count + 1)], "teacher")
    ids = lm_token_ids()
    with torch.no_grad():
        tapped = model.lm_head()(model(ids))
        outputs = model.model(input_ids=ids, output_hidden_states=True)
    return taps, tapped, outputs.logits, outputs.hidden_states, ()


@pytest.mark.parametrize("model_type", sorted(HF_LAYERS))
def test_numbered_outputs_are_transformers_own(model_type):
    taps, tapped, logits, hidden_states, attentions = run_both_ways(model_type)
    torch.testing.assert_close(tapped, logits)  # tapping changed nothing
    for index, expected in enumerate(hidden_states):
        torch.testing.assert_close(taps.outputs[f"hidden_states.{index}"], expected)
    for index, expected in enumerate(attentions):
        torch.testing.assert_close(taps.outputs[f"attentions.{index}"], expected)
    assert len(taps.outputs) == len(hidden_states) + len(attentions)


@pytest.mark.parametrize("model_type", ["mpnet", "deberta-v2"])
def test_attentions_asked_for_leave_the_model_as_it_was_once_untapped(model_type):
    """Their attention modules return probabilities only when asked; the taps ask, and stop asking."""
    spec = tiny_spec(model_type)
    model = build_hf_model(spec, attn_implementation="eager").eval()
    attention = f"model.{model.model.base_model_prefix}.encoder.layer.0.{HF_LAYERS[model_type].attention}"
    seen = []
    model.get_submodule(attention).register_forward_hook(
        lambda _module, _inputs, output: seen.append(len(output) > 1 and output[1] is not None)
    )
    taps = LayerTaps(model, ["attentions.0"], "student")
    with torch.no_grad():
        model(tiny_inputs(spec))
        taps.remove()
        model(tiny_inputs(spec))
    assert taps.outputs["attentions.0"].shape == (4, 2, spec.max_length, spec.max_length)
    assert seen == [True, False]


@pytest.mark.parametrize(
    ("model_type", "name", "words"),
    [
        ("bert", "hidden_states.5", "hidden_states.0 to hidden_states.4 and attentions.0 to attentions.3"),
        ("bert", "attentions.4", "(bert, 4 layers) has no attentions.4"),
        ("resnet", "attentions.0", "its numbered outputs are hidden_states.0 to hidden_states.2"),
        ("albert", "hidden_states.1", "transformers gives no hook one module per layer of a albert"),
    ],
)
def test_a_numbered_output_the_model_lacks_names_those_it_has(model_type, name, words):
    model = build_hf_model(tiny_spec(model_type))
    with pytest.raises(JobFailed) as caught:
        LayerTaps(model, [name], "student")
    assert caught.value.code == "unknown_layer" and words in caught.value.message
    assert caught.value.message.startswith(f"the student ({model_type}")
