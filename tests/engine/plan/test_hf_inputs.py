"""An `hf` teacher's spec from what its folder says: the tokens a text model places, the images an image
model was trained on, its labels."""

import pytest

from engine.plan.hf_inputs import IMAGENET_MEAN, folder_spec, token_capacity

LABELS = {"id2label": {"0": "neg", "1": "pos", "2": "neutral"}, "num_labels": 3}


def test_a_text_model_reads_what_its_positions_and_tokenizer_allow():
    bert = {"model_type": "bert", "max_position_embeddings": 512} | LABELS
    spec = folder_spec(bert, parameters=1234, tokenizer_config={"model_max_length": 256})
    assert (spec.task, spec.num_classes, spec.max_length, spec.parameters) == ("text", 3, 256, 1234)
    # A tokenizer without a limit writes a huge sentinel, which says nothing.
    assert token_capacity(bert, {"model_max_length": 1000000000000000019884624838656}) == 512


def test_roberta_loses_the_positions_before_its_padding_id():
    roberta = {"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}
    assert token_capacity(roberta) == 512


@pytest.mark.parametrize(
    ("preprocessor", "shape"),
    [
        ({"size": {"height": 32, "width": 48}}, [3, 32, 48]),
        ({"size": {"shortest_edge": 40}, "crop_size": {"height": 36, "width": 36}}, [3, 36, 36]),
        ({"size": 28}, [3, 28, 28]),
        ({}, [3, 64, 64]),  # the config's image_size
    ],
)
def test_an_image_model_reads_its_preprocessors_size(preprocessor, shape):
    spec = folder_spec({"model_type": "vit", "image_size": 64} | LABELS, preprocessor=preprocessor)
    assert spec.input_shape == shape
    assert spec.image_mean == IMAGENET_MEAN


def test_an_image_model_keeps_its_own_normalisation():
    preprocessor = {"image_mean": [0.5], "image_std": [0.25], "size": 28}
    spec = folder_spec({"model_type": "resnet", "num_channels": 1} | LABELS, preprocessor=preprocessor)
    assert (spec.input_shape, spec.image_mean, spec.image_std) == ([1, 28, 28], [0.5], [0.25])
    unnormalised = folder_spec({"model_type": "resnet"} | LABELS, preprocessor={"do_normalize": False})
    assert (unnormalised.image_mean, unnormalised.image_std) == ([0.0], [1.0])
