"""Students derived from a transformers teacher and initialised from its weights: a student as deep and as
wide is the teacher, a shallower one takes every second layer, a narrower one the leading slices, and a
student of another model type or deeper than the teacher is left as it was, saying why."""

import pytest
import torch

from engine.models.hf.teacher_init import LAYER_KEYS, initialise_hf_student
from engine.models.registry import build_model
from engine.plan.hf_design import ENCODERS, STAGED, derive_hf_spec, student_from_config
from tests.engine.hf_factories import CONFIGS, FAMILIES, tiny_inputs, tiny_spec

# ALBERT shares one group of weights across its layers: it has no layers of its own to map.
LAYERED = [model_type for model_type in CONFIGS if model_type in LAYER_KEYS]
DERIVABLE = [model_type for model_type in LAYERED if model_type in ENCODERS or model_type in STAGED]


def teacher_and_student(teacher_spec, student_spec):
    torch.manual_seed(0)
    teacher = build_model(teacher_spec)
    teacher.train()(tiny_inputs(teacher_spec))  # BatchNorm statistics that are not the initial ones
    torch.manual_seed(1)
    student = build_model(student_spec)
    return teacher.eval(), student.eval()


@pytest.mark.parametrize("model_type", FAMILIES)
def test_a_student_of_the_teachers_depth_and_width_computes_what_the_teacher_does(model_type):
    spec = tiny_spec(model_type)
    teacher, student = teacher_and_student(spec, derive_hf_spec(spec, depth=1.0, width=1.0))
    assert ", 0 cut to their leading slice, 0 left as initialised" in initialise_hf_student(student, teacher)
    x = tiny_inputs(spec)
    with torch.no_grad():
        torch.testing.assert_close(student(x), teacher(x))


@pytest.mark.parametrize("model_type", DERIVABLE)
def test_a_student_of_half_the_depth_starts_from_every_second_teacher_layer(model_type):
    spec = tiny_spec(model_type)
    student_spec = derive_hf_spec(spec, depth=0.5, width=1.0)
    teacher, student = teacher_and_student(spec, student_spec)
    summary = initialise_hf_student(student, teacher)
    assert_layers_copied(student, teacher, LAYER_KEYS[model_type], kept=[0, 2])
    assert "0, 2" in summary and " 0 left as initialised" in summary


def assert_layers_copied(student, teacher, pattern, kept: list[int], others_too: bool = False) -> None:
    """Student layer i's tensors are teacher layer kept[i]'s (`pattern` names a layer's tensors); with
    `others_too`, every other tensor is the teacher's of its name."""
    teacher_state, layer_tensors = teacher.state_dict(), 0
    for name, tensor in student.state_dict().items():
        match = pattern.match(name)
        if match:
            layer_tensors += 1
            teacher_name = f"{match[1]}{kept[int(match[2])]}{name[match.end(2) :]}"
            assert torch.equal(tensor, teacher_state[teacher_name]), name
        elif others_too:
            assert torch.equal(tensor, teacher_state[name]), name
    assert layer_tensors


def test_a_narrower_student_starts_from_the_leading_slices():
    spec = tiny_spec("bert")
    teacher, student = teacher_and_student(spec, derive_hf_spec(spec, depth=0.5, width=0.5))
    initialise_hf_student(student, teacher)
    sliced = student.state_dict()["model.bert.encoder.layer.1.intermediate.dense.weight"]
    source = teacher.state_dict()["model.bert.encoder.layer.2.intermediate.dense.weight"]
    assert sliced.shape == (16, 8) and torch.equal(sliced, source[:16, :8])


@pytest.mark.parametrize("model_type", LAYERED)
def test_every_mapped_model_types_layers_are_found(model_type):
    spec = tiny_spec(model_type)
    teacher, student = teacher_and_student(spec, spec)
    assert "none of its own" not in initialise_hf_student(student, teacher)


def test_a_student_of_another_model_type_is_left_as_initialised():
    teacher_spec = tiny_spec("bert")
    student_spec = student_from_config(teacher_spec, {"model_type": "distilbert", **CONFIGS["distilbert"]})
    teacher, student = teacher_and_student(teacher_spec, student_spec)
    before = {name: tensor.clone() for name, tensor in student.state_dict().items()}
    summary = initialise_hf_student(student, teacher)
    assert summary.startswith("Student left as initialised: a distilbert student")
    assert all(torch.equal(tensor, before[name]) for name, tensor in student.state_dict().items())


def test_a_student_deeper_than_the_teacher_is_left_as_initialised():
    teacher_spec = tiny_spec("vit")
    student_spec = student_from_config(
        teacher_spec, {"model_type": "vit", **CONFIGS["vit"], "num_hidden_layers": 5}
    )
    teacher, student = teacher_and_student(teacher_spec, student_spec)
    assert "its vit.layers has 5 layers and the teacher's 4" in initialise_hf_student(student, teacher)
