"""TinyBERT intermediate-layer losses: layer maps, masking, zero for identical models, and they train; an hf
encoder read by its config, its padding id left out."""

import pytest
import torch
from torch import nn

from engine.losses.tinybert import TinyBertLoss, capture_paths, encoder, uniform_layer_map
from engine.models.hf.build import build_hf_model
from engine.models.hooks import LayerTaps
from engine.models.registry import build_model
from engine.models.transformer import capture_points
from engine.plan.errors import JobFailed
from engine.plan.specs import TransformerSpec
from tests.engine.hf_factories import tiny_inputs, tiny_spec

TEACHER = TransformerSpec(
    vocab_size=40,
    max_length=8,
    num_classes=3,
    hidden_size=32,
    num_layers=4,
    num_heads=4,
    intermediate_size=64,
)
STUDENT = TEACHER.model_copy(
    update={"hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 32}
)
LOSS_NAMES = {"embedding_loss", "hidden_loss", "attention_loss", "tinybert_loss"}


def build(spec: TransformerSpec, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(spec.model_copy(update={"dropout": 0.0}))


def token_ids(batch: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, TEACHER.vocab_size, (batch, TEACHER.max_length), generator=generator)
    lengths = torch.randint(2, TEACHER.max_length + 1, (batch,), generator=generator)
    return ids.masked_fill(torch.arange(TEACHER.max_length) >= lengths[:, None], 0)


def run_capturing(model: nn.Module, spec: TransformerSpec, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's outputs at every capture point, keyed by module path, as the pipeline captures them."""
    points = capture_points(spec)
    captured, handles = {}, []
    for path in [points["embeddings"], *points["hidden"], *points["attention"]]:
        hook = lambda module, args, output, path=path: captured.__setitem__(path, output)  # noqa: E731
        handles.append(model.get_submodule(path).register_forward_hook(hook))
    model(ids)
    for handle in handles:
        handle.remove()
    return captured


@pytest.mark.parametrize(
    "student_layers, teacher_layers, expected",
    [(2, 4, [1, 3]), (3, 12, [3, 7, 11]), (4, 4, [0, 1, 2, 3]), (1, 6, [5]), (4, 2, [0, 0, 1, 1])],
)
def test_uniform_layer_map(student_layers, teacher_layers, expected):
    assert uniform_layer_map(student_layers, teacher_layers) == expected


@pytest.mark.parametrize(
    "layer_map, words",
    [
        ([1], "has 1 entries but the student has 2"),
        ([1, 4], "[4]"),
        ([-1, 2], "[-1]"),
        ([0, True], "[True]"),
        ([0, 1.5], "[1.5]"),
    ],
)
def test_invalid_layer_map(layer_map, words):
    with pytest.raises(JobFailed) as caught:
        TinyBertLoss(STUDENT, TEACHER, layer_map=layer_map)
    assert caught.value.code == "invalid_layer_map"
    assert words in caught.value.message and "4" in caught.value.message


def test_explicit_layer_map_is_used():
    assert TinyBertLoss(STUDENT, TEACHER, layer_map=[0, 2]).layer_map == [0, 2]
    assert TinyBertLoss(STUDENT, TEACHER).layer_map == [1, 3]


def test_projections_are_linear_only_between_different_widths():
    loss = TinyBertLoss(STUDENT, TEACHER)
    assert isinstance(loss.embedding_projection, nn.Linear) and loss.hidden_projection.in_features == 16
    assert sum(p.numel() for p in loss.parameters()) == 2 * (16 * 32 + 32)
    assert list(TinyBertLoss(TEACHER, TEACHER).parameters()) == []


def test_losses_are_zero_between_identical_models():
    model, ids = build(TEACHER, seed=0).eval(), token_ids()
    captures = run_capturing(model, TEACHER, ids)
    losses = TinyBertLoss(TEACHER, TEACHER)(captures, captures, ids == 0)
    assert set(losses) == LOSS_NAMES
    assert all(value.item() == 0 for value in losses.values()), losses


def test_losses_are_positive_between_different_models():
    ids = token_ids()
    student = run_capturing(build(STUDENT, seed=1), STUDENT, ids)
    teacher = run_capturing(build(TEACHER, seed=0), TEACHER, ids)
    losses = TinyBertLoss(STUDENT, TEACHER)(student, teacher, ids == 0)
    assert all(value.item() > 0 for value in losses.values()), losses
    total = losses["embedding_loss"] + losses["hidden_loss"] + losses["attention_loss"]
    torch.testing.assert_close(losses["tinybert_loss"], total)


def test_padded_positions_are_ignored():
    ids = token_ids()
    student = run_capturing(build(STUDENT, seed=1), STUDENT, ids)
    teacher = run_capturing(build(TEACHER, seed=0), TEACHER, ids)
    loss = TinyBertLoss(STUDENT, TEACHER)
    expected = loss(student, teacher, ids == 0)
    padding = (ids == 0)[..., None]
    scrambled = {
        path: torch.where(padding, torch.randn_like(value), value) if value.ndim == 3 else value
        for path, value in student.items()
    }
    actual = loss(scrambled, teacher, ids == 0)
    torch.testing.assert_close(actual, expected)


def test_weights_scale_the_total_and_a_zero_weight_skips_its_captures():
    ids = token_ids()
    student = run_capturing(build(STUDENT, seed=1), STUDENT, ids)
    teacher = run_capturing(build(TEACHER, seed=0), TEACHER, ids)
    without_attention = {path: value for path, value in student.items() if "attention" not in path}
    loss = TinyBertLoss(STUDENT, TEACHER, embedding_weight=2.0, hidden_weight=0.5, attention_weight=0.0)
    losses = loss(without_attention, teacher, ids == 0)
    assert losses["attention_loss"].item() == 0
    expected = 2.0 * losses["embedding_loss"] + 0.5 * losses["hidden_loss"]
    torch.testing.assert_close(losses["tinybert_loss"], expected)


def test_same_head_count_compares_head_by_head():
    """Student head i is compared with teacher head i: the same heads in another order do not match."""
    ids = token_ids()
    captures = run_capturing(build(TEACHER, seed=0).eval(), TEACHER, ids)
    swapped = {
        path: value[:, [1, 0, 2, 3]] if "attention" in path else value for path, value in captures.items()
    }
    losses = TinyBertLoss(TEACHER, TEACHER)(swapped, captures, ids == 0)
    assert losses["attention_loss"].item() > 0


def test_the_student_learns_to_match_the_teachers_hidden_states():
    torch.manual_seed(0)
    teacher = build(TEACHER, seed=0).eval()
    student = build(STUDENT, seed=1).train()
    loss = TinyBertLoss(STUDENT, TEACHER)
    optimizer = torch.optim.Adam([*student.parameters(), *loss.parameters()], lr=1e-2)
    ids = token_ids(batch=16)
    with torch.no_grad():
        teacher_captures = run_capturing(teacher, TEACHER, ids)
    history = []
    for _ in range(40):
        losses = loss(run_capturing(student, STUDENT, ids), teacher_captures, ids == 0)
        optimizer.zero_grad()
        losses["tinybert_loss"].backward()
        optimizer.step()
        history.append(losses["hidden_loss"].item())
    assert history[-1] < 0.5 * history[0], history


def test_an_hf_encoder_is_read_by_transformers_names_for_its_sizes():
    distilbert = encoder(tiny_spec("distilbert", n_layers=3))  # `dim` and `n_layers` in its config
    assert (distilbert.layers, distilbert.width, distilbert.padding_id) == (3, 16, 0)
    assert distilbert.points == {
        "embeddings": "hidden_states.0",
        "hidden": ["hidden_states.1", "hidden_states.2", "hidden_states.3"],
        "attention": ["attentions.0", "attentions.1", "attentions.2"],
    }
    assert encoder(tiny_spec("roberta")).padding_id == 1


def test_hf_padding_is_left_out_as_if_the_text_were_shorter():
    """RoBERTa pads with id 1: the losses over padded ids are those over the same ids without the padding."""
    specs = [
        tiny_spec("roberta", num_hidden_layers=2, hidden_size=8),
        tiny_spec("roberta"),
    ]  # student, teacher
    models = [build_hf_model(spec, attn_implementation="eager").eval() for spec in specs]
    taps = [LayerTaps(model, capture_paths(spec), "model") for model, spec in zip(models, specs, strict=True)]
    loss = TinyBertLoss(*specs)
    padded = tiny_inputs(specs[1])  # the last 3 positions are padding

    def losses(ids: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            for model in models:
                model(ids)
        return loss(taps[0].outputs, taps[1].outputs, ids == encoder(specs[0]).padding_id)

    torch.testing.assert_close(losses(padded), losses(padded[:, :-3]))
