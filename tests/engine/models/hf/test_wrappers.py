"""Wrapped transformers classifiers: token ids or images in [0, 1] in, logits out, in eval and training; the
padding masked, pairs told apart, layers reached by name, and the wrapped model exported to ONNX."""

import pytest
import torch
import torch.nn.functional as F

from engine.export.onnx_model import OnnxRunner, export_onnx
from engine.export.pt2 import export_program
from engine.models.hf.wrappers import segment_ids
from engine.models.hooks import LayerTaps
from engine.models.registry import build_model, count_parameters
from tests.engine.hf_factories import BERT_SEP, FAMILIES, NUM_CLASSES, tiny_inputs, tiny_spec


def built(model_type: str, **config):
    spec = tiny_spec(model_type, **config)
    torch.manual_seed(0)
    return spec, build_model(spec)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_each_family_gives_logits_in_eval_and_trains(model_type):
    spec, model = built(model_type)
    x = tiny_inputs(spec)
    with torch.no_grad():
        assert model.eval()(x).shape == (len(x), NUM_CLASSES)
    loss = F.cross_entropy(model.train()(x), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    trained = [name for name, parameter in model.named_parameters() if parameter.grad is not None]
    assert trained and all(name.startswith("model.") for name in trained)
    assert count_parameters(model) < 60_000


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert"])
def test_padding_is_masked(model_type):
    spec, model = built(model_type)
    x = tiny_inputs(spec)  # the last 3 positions are padding
    with torch.no_grad():
        padded, unpadded = model.eval()(x), model(x[:, : spec.max_length - 3])
    torch.testing.assert_close(padded, unpadded)


def test_pairs_are_segment_1_from_after_the_first_separator_to_the_padding():
    cls, pad, a, b = 2, 0, 7, 8
    ids = torch.tensor([[cls, a, a, BERT_SEP, b, BERT_SEP, pad], [cls, a, BERT_SEP, pad, pad, pad, pad]])
    assert segment_ids(ids, ids != pad, BERT_SEP).tolist() == [[0, 0, 0, 0, 1, 1, 0], [0] * 7]


def test_only_models_with_token_types_are_given_segments():
    _, bert = built("bert")
    _, roberta = built("roberta", sep_token_id=2)  # RoBERTa has one token type: pairs are told by </s></s>
    assert bert.sep_token_id == BERT_SEP and roberta.sep_token_id is None
    spec = tiny_spec("bert")
    pair = tiny_inputs(spec)
    pair[:, 4] = BERT_SEP
    with torch.no_grad():
        as_pair = bert.eval()(pair)
        bert.sep_token_id = None
        as_one_text = bert(pair)
    assert not torch.allclose(as_pair, as_one_text)


def test_images_are_normalised_with_the_models_mean_and_std():
    spec, model = built("vit")
    x = tiny_inputs(spec)
    mean, std = torch.tensor(spec.image_mean).view(1, 3, 1, 1), torch.tensor(spec.image_std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), model.model(pixel_values=(x - mean) / std).logits)
    assert "mean" not in model.state_dict()


@pytest.mark.parametrize(
    ("model_type", "layer", "shape"),
    [
        ("bert", "model.bert.encoder.layer.1", (4, 12, 16)),
        ("distilbert", "model.distilbert.transformer.layer.3", (4, 12, 16)),
        ("vit", "model.vit.layers.0", (4, 5, 16)),
        ("resnet", "model.resnet.encoder.stages.1", (4, 16, 1, 1)),
    ],
)
def test_layers_are_reached_by_forward_hooks(model_type, layer, shape):
    spec, model = built(model_type)
    taps = LayerTaps(model, [layer], "student")
    with torch.no_grad():
        model.eval()(tiny_inputs(spec))
    taps.remove()
    assert taps.outputs[layer].shape == shape


@pytest.mark.parametrize("model_type", ["bert", "resnet"])
def test_the_wrapped_model_exports_to_onnx(model_type, tmp_path):
    spec, model = built(model_type)
    model.eval()
    x = tiny_inputs(spec, count=3)
    onnx = OnnxRunner(export_onnx(export_program(model, x), tmp_path))
    with torch.no_grad():
        torch.testing.assert_close(onnx(x), model(x), atol=1e-5, rtol=1e-4)
