"""Students of transformers teachers from the spec alone: derived with fewer and narrower layers of the
teacher's model type, given as a config with the teacher's labels and inputs, and what keeps a student from
pairing with its teacher said with what would work."""

import pytest

from engine.models.registry import build_model
from engine.plan.design import derive_spec
from engine.plan.errors import JobFailed
from engine.plan.hf_design import (
    CHANNEL_MULTIPLIERS,
    ENCODERS,
    STAGED,
    derive_hf_spec,
    pairing_problems,
    student_from_config,
)
from engine.plan.sizes import activation_floats, parameter_count
from tests.engine.hf_factories import CONFIGS, IMAGE, MAX_LENGTH, NUM_CLASSES, VOCAB, tiny_inputs, tiny_spec

LABELS = {"id2label": {"0": "sad", "1": "calm", "2": "glad"}, "label2id": {"sad": 0, "calm": 1, "glad": 2}}
DERIVABLE = [model_type for model_type in CONFIGS if {model_type} & (ENCODERS.keys() | STAGED.keys())]


def derive_failure(spec, depth=0.5, width=0.5) -> JobFailed:
    with pytest.raises(JobFailed) as caught:
        derive_hf_spec(spec, depth, width)
    assert caught.value.code == "derive_unsupported"
    return caught.value


@pytest.mark.parametrize("model_type", DERIVABLE + list(CHANNEL_MULTIPLIERS))
def test_every_derived_student_builds_and_is_smaller(model_type):
    teacher = tiny_spec(model_type).model_copy(update={"parameters": 1, "activation_floats": 1})
    depth = 1.0 if model_type in CHANNEL_MULTIPLIERS else 0.5
    student = derive_hf_spec(teacher, depth=depth, width=0.5)
    assert student.parameters is None and student.activation_floats is None  # the teacher's, measured anew
    assert student.num_classes == teacher.num_classes and student.input_shape == teacher.input_shape
    teacher_model, student_model = build_model(teacher), build_model(student)
    assert student_model(tiny_inputs(student)).shape == (4, NUM_CLASSES)
    count = lambda model: sum(parameter.numel() for parameter in model.parameters())  # noqa: E731
    assert count(student_model) < count(teacher_model)


def test_an_encoder_keeps_its_heads_and_every_second_layer():
    teacher = tiny_spec("bert", num_hidden_layers=6, hidden_size=24, num_attention_heads=3, **LABELS)
    student = derive_spec(teacher, depth=0.5, width=0.5)
    config = student.config
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]) == (3, 12, 16)
    assert config["num_attention_heads"] == 3 and config["id2label"] == LABELS["id2label"]
    assert student.max_length == MAX_LENGTH and config["vocab_size"] == VOCAB


def test_distilbert_and_modernbert_shrink_by_their_own_keys():
    distilbert = derive_hf_spec(tiny_spec("distilbert"), depth=0.5, width=0.5).config
    assert (distilbert["n_layers"], distilbert["dim"], distilbert["hidden_dim"]) == (2, 8, 16)
    types = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    modernbert = derive_hf_spec(tiny_spec("modernbert", layer_types=types), depth=0.5, width=1.0).config
    assert modernbert["layer_types"] == [
        "full_attention",
        "full_attention",
    ]  # those of teacher layers 0 and 2


def test_sizes_tied_to_the_width_follow_it():
    assert derive_hf_spec(tiny_spec("deberta"), depth=1.0, width=0.5).config["pooler_hidden_size"] == 8
    electra = derive_hf_spec(tiny_spec("electra", embedding_size=16), depth=1.0, width=0.5).config
    assert electra["embedding_size"] == electra["hidden_size"] == 8
    assert (
        derive_hf_spec(tiny_spec("electra", embedding_size=10), depth=1.0, width=0.5).config["embedding_size"]
        == 5
    )


def test_stages_keep_a_block_each_and_swin_its_heads_whole():
    resnet = derive_hf_spec(tiny_spec("resnet", depths=[1, 3]), depth=0.5, width=0.5).config
    assert (resnet["depths"], resnet["hidden_sizes"], resnet["embedding_size"]) == ([1, 2], [4, 8], 4)
    swin = derive_hf_spec(tiny_spec("swin", embed_dim=12, num_heads=[3, 6], hidden_size=24), 1.0, 0.5).config
    assert (swin["embed_dim"], swin["hidden_size"]) == (6, 12)  # stage 0: 6 / 3 heads, stage 1: 12 / 6 heads


def test_mobilenet_narrows_by_its_multiplier_and_keeps_its_layers():
    student = derive_hf_spec(tiny_spec("mobilenet_v2"), depth=1.0, width=0.5)
    assert student.config["depth_multiplier"] == pytest.approx(0.1)
    failure = derive_failure(tiny_spec("mobilenet_v2"), depth=0.5)
    assert failure.param == "student.derive.depth" and "depth must be 1" in failure.message


def test_model_types_whose_sizes_are_tied_are_not_derived():
    failure = derive_failure(tiny_spec("efficientnet"))
    assert failure.param == "student.derive" and "give student.architecture" in failure.message


def test_a_teacher_config_without_the_sizes_it_shrinks_is_refused():
    config = {key: value for key, value in CONFIGS["bert"].items() if key != "intermediate_size"}
    teacher = tiny_spec("bert").model_copy(update={"config": {"model_type": "bert", **config}})
    assert "intermediate_size" in derive_failure(teacher).message


def test_a_student_config_takes_the_teachers_labels_and_inputs():
    teacher = tiny_spec("roberta", sep_token_id=2, **LABELS)
    student = student_from_config(
        teacher, {"model_type": "distilbert", "n_layers": 2, "num_labels": 7, "id2label": {"0": "x"}}
    )
    assert student.num_classes == NUM_CLASSES and student.config["id2label"] == LABELS["id2label"]
    assert "num_labels" not in student.config
    assert [student.config[key] for key in ("vocab_size", "pad_token_id", "sep_token_id")] == [VOCAB, 1, 2]
    assert student.max_length == MAX_LENGTH and pairing_problems(teacher, student) == []


def test_an_image_student_config_takes_the_teachers_images_unless_it_says_otherwise():
    teacher = tiny_spec("vit")
    student = student_from_config(teacher, {"model_type": "mobilenet_v2", "image_mean": [0.5] * 3})
    assert student.input_shape == IMAGE and student.config["image_size"] == IMAGE[1]
    assert student.image_mean == [0.5] * 3 and student.image_std == teacher.image_std
    assert "image_mean" not in student.config and pairing_problems(teacher, student) == []
    larger = student_from_config(teacher, {"model_type": "vit", **CONFIGS["vit"], "image_size": 16})
    assert larger.input_shape == [3, 16, 16]


def test_what_cannot_pair_is_said_with_what_would_work():
    text = tiny_spec("bert")
    (problem,) = pairing_problems(text, tiny_spec("vit"))
    assert "the teacher (bert) is a text classifier and the student (vit) an image classifier" in problem
    with pytest.raises(ValueError, match="choose a model_type of a text classifier for the student"):
        student_from_config(text, {"model_type": "resnet"})
    small_vocab = student_from_config(text, {"model_type": "bert", "vocab_size": 50})
    assert pairing_problems(text, small_vocab) == [
        f"the student's vocab_size 50 is smaller than the teacher tokenizer's {VOCAB}: it reads the "
        f"teacher's token ids, so give it vocab_size {VOCAB} (or more)."
    ]
    roberta = student_from_config(text, {"model_type": "roberta", "max_position_embeddings": 12})
    (positions,) = pairing_problems(text, roberta)  # RoBERTa numbers positions from pad_token_id + 1
    assert "12 max_position_embeddings and its max_length 12 needs 13" in positions
    longer = text.model_copy(update={"max_length": MAX_LENGTH + 1})
    assert "give dataset.max_length 12 or less" in pairing_problems(text, longer)[0]
    shorter = text.model_copy(update={"max_length": MAX_LENGTH - 1})
    assert pairing_problems(text, shorter) == []  # the teacher reads the shorter ids as well


def test_images_of_another_size_cannot_pair():
    teacher = tiny_spec("resnet")
    student = student_from_config(teacher, {"model_type": "resnet", "image_size": 16, "num_channels": 1})
    (sizes,) = pairing_problems(teacher, student)
    assert "the student takes images of [1, 16, 16] and the teacher [3, 8, 8]" in sizes
    gray = student.model_copy(update={"input_shape": IMAGE})
    assert "num_channels 1 but its input_shape [3, 8, 8] 3 channels" in pairing_problems(teacher, gray)[0]
    vit = student_from_config(teacher, {"model_type": "vit"}).model_copy(update={"input_shape": [3, 8, 8]})
    vit.config["image_size"] = 224
    assert any("give it image_size 8" in problem for problem in pairing_problems(teacher, vit))


def test_a_job_is_sized_by_the_measured_figures():
    spec = tiny_spec("bert").model_copy(update={"parameters": 123, "activation_floats": 45})
    assert (parameter_count(spec), activation_floats(spec)) == (123, 45)
    with pytest.raises(ValueError, match="engine.models.hf.sizing"):
        parameter_count(tiny_spec("bert"))
