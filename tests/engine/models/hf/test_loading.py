"""Teachers from a `save_pretrained` folder: loaded as the spec describes them, frozen by `load_teacher`, and
refused with what to do when the weights are not those of the config."""

import pytest
import torch
from transformers import AutoModel

from engine.models.hf.loading import load_hf_model
from engine.models.registry import build_model
from engine.plan.errors import JobFailed
from engine.teachers.loading import load_teacher
from tests.engine.hf_factories import FAMILIES, tiny_inputs, tiny_spec


def saved(spec, folder):
    torch.manual_seed(0)
    model = build_model(spec)
    model.train()(tiny_inputs(spec))  # BatchNorm statistics that are not the initial ones
    model.model.save_pretrained(folder)
    return model.eval()


def load_failure(folder, spec) -> JobFailed:
    with pytest.raises(JobFailed) as caught:
        load_hf_model(folder, spec)
    assert caught.value.code == "teacher_load_failed"
    return caught.value


@pytest.mark.parametrize("model_type", FAMILIES)
def test_a_saved_folder_loads_to_the_same_model(model_type, tmp_path):
    spec = tiny_spec(model_type)
    source = saved(spec, tmp_path)
    loaded = load_hf_model(tmp_path, spec)
    assert not loaded.training
    x = tiny_inputs(spec)
    with torch.no_grad():  # tensors read from a file are laid out otherwise: oneDNN rounds otherwise
        torch.testing.assert_close(loaded(x), source(x), rtol=1e-4, atol=1e-3)
    assert all(torch.equal(tensor, source.state_dict()[name]) for name, tensor in loaded.state_dict().items())


def test_load_teacher_reads_an_hf_folder_frozen(tmp_path):
    spec = tiny_spec("bert")
    saved(spec, tmp_path)
    teacher = load_teacher(tmp_path, "hf", spec)
    assert not any(parameter.requires_grad for parameter in teacher.parameters())
    with pytest.raises(JobFailed, match="hf spec") as caught:
        load_teacher(tmp_path, "hf", None)
    assert caught.value.code == "architecture_required"


def test_weights_of_another_size_are_refused_with_their_shapes(tmp_path):
    saved(tiny_spec("bert"), tmp_path)
    message = load_failure(tmp_path, tiny_spec("bert", intermediate_size=24)).message
    assert "bert.encoder.layer.0.intermediate.dense.weight: weights [32, 16] vs config [24, 16]" in message


def test_a_base_model_without_a_trained_classifier_is_refused(tmp_path):
    spec = tiny_spec("bert")
    AutoModel.from_config(build_model(spec).model.config).save_pretrained(tmp_path)
    assert "missing classifier.weight" in load_failure(tmp_path, spec).message


def test_a_folder_without_safetensors_weights_is_refused(tmp_path):
    spec = tiny_spec("bert")
    saved(spec, tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")  # pickles are never read
    assert "model.safetensors" in load_failure(tmp_path, spec).message
