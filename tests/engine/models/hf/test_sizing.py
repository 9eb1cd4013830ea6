"""What a transformers model costs, measured without memory: parameters exactly as the built model has them,
activations that grow with the input, and a process the API runs that refuses absurd configs unbuilt."""

import io
import json
import subprocess
import sys
from dataclasses import asdict

import pytest

from engine.models.hf.lora import with_adapters
from engine.models.hf.sizing import TooLarge, main, measure
from engine.models.registry import build_model, count_parameters
from engine.plan.specs import HFSpec, LoraConfig
from tests.engine.hf_factories import CONFIGS, tiny_spec
from tests.lm_model_factories import lm_spec


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_parameters_are_those_of_the_built_model(model_type):
    spec = tiny_spec(model_type)
    sizes = measure(spec)
    assert sizes.parameters == count_parameters(build_model(spec))
    assert sizes.activation_floats > 0


def test_activations_grow_with_the_input_and_the_layers():
    text = measure(tiny_spec("bert")).activation_floats
    assert measure(tiny_spec("bert").model_copy(update={"max_length": 6})).activation_floats < text / 1.5
    assert measure(tiny_spec("bert", num_hidden_layers=8)).activation_floats > 1.5 * text


def test_a_model_too_large_to_build_is_refused_unbuilt():
    huge = tiny_spec("bert", num_hidden_layers=500, hidden_size=100_000, num_attention_heads=10)
    with pytest.raises(TooLarge, match="num_hidden_layers, hidden_size"):
        measure(huge)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_a_lora_students_adapters_are_those_the_student_trains(model_type):
    lora = LoraConfig(r=4)
    model = build_model(lm_spec(model_type))
    trained = sum(p.numel() for p in with_adapters(model.model, lora).parameters() if p.requires_grad)
    assert measure(lm_spec(model_type), lora).adapter_parameters == trained > 0
    assert measure(lm_spec(model_type), LoraConfig(r=8)).adapter_parameters == 2 * trained


def test_the_api_measures_its_specs_in_a_process_of_their_own():
    specs = [tiny_spec("vit"), tiny_spec("bert"), lm_spec("gpt2")]
    loras = [None, None, LoraConfig()]
    done = subprocess.run(
        [sys.executable, "-m", "engine.models.hf.sizing"],
        input=json.dumps([document(spec, lora) for spec, lora in zip(specs, loras, strict=True)]),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [asdict(measure(s, lora)) for s, lora in zip(specs, loras, strict=True)]
    assert json.loads(done.stdout)[0]["parameters"] == count_parameters(build_model(specs[0]))


def test_the_process_answers_why_a_spec_has_no_sizes(monkeypatch, capsys):
    huge = tiny_spec("vit", num_hidden_layers=500, hidden_size=65_536)
    nowhere = LoraConfig(target_modules=["nowhere"])
    documents = [document(huge), document(tiny_spec("vit")), document(lm_spec("llama"), nowhere)]
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(documents)))
    main()
    refused, measured, untargeted = json.loads(capsys.readouterr().out)
    assert refused["error"].startswith("TooLarge: the vit config's layers")
    assert measured["parameters"] > 0
    assert untargeted["adapter_parameters"] is None  # the job's rules refuse it, naming the field


def document(spec: HFSpec, lora: LoraConfig | None = None) -> dict:
    """What the API sends the sizing process for a model."""
    return {"spec": spec.model_dump(mode="json"), "lora": lora and lora.model_dump(mode="json")}
