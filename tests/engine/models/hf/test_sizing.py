"""What a transformers model costs, measured without memory: parameters exactly as the built model has them,
activations that grow with the input, and a process the API runs that refuses absurd configs unbuilt."""

import io
import json
import subprocess
import sys

import pytest

from engine.models.hf.sizing import TooLarge, main, measure
from engine.models.registry import build_model, count_parameters
from tests.engine.hf_factories import CONFIGS, tiny_spec


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
    huge = tiny_spec("bert", num_hidden_layers=1000, hidden_size=100_000, num_attention_heads=10)
    with pytest.raises(TooLarge, match="num_hidden_layers, hidden_size"):
        measure(huge)


def test_the_api_measures_a_spec_in_a_process_of_its_own():
    spec = tiny_spec("vit")
    done = subprocess.run(
        [sys.executable, "-m", "engine.models.hf.sizing"],
        input=spec.model_dump_json(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "parameters": count_parameters(build_model(spec)),
        "activation_floats": measure(spec).activation_floats,
    }


def test_the_process_refuses_with_the_reason_on_stderr(monkeypatch, capsys):
    huge = tiny_spec("vit", num_hidden_layers=100_000, hidden_size=65_536)
    monkeypatch.setattr(sys, "stdin", io.StringIO(huge.model_dump_json()))
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    assert capsys.readouterr().err.startswith("TooLarge: the vit config's layers")
