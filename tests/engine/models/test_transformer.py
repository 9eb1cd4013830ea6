"""The `transformer` family: padding is invisible, hooks see the documented tensors, pt2 export matches."""

import pytest
import torch

from engine.export.pt2 import export_student
from engine.models.registry import build_model
from engine.models.transformer import TransformerClassifier, capture_points
from engine.plan.specs import TransformerSpec

SPEC = TransformerSpec(
    vocab_size=30,
    max_length=8,
    num_classes=3,
    hidden_size=16,
    num_layers=2,
    num_heads=2,
    intermediate_size=32,
)


def token_ids(batch: int, lengths: list[int] | None = None, spec: TransformerSpec = SPEC) -> torch.Tensor:
    """Random non-padding ids, then padding (0) after each row's length."""
    generator = torch.Generator().manual_seed(batch)
    ids = torch.randint(1, spec.vocab_size, (batch, spec.max_length), generator=generator)
    for row, length in enumerate(lengths or []):
        ids[row, length:] = 0
    return ids


def model_for(spec: TransformerSpec) -> TransformerClassifier:
    torch.manual_seed(0)
    return build_model(spec).eval()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_builds_from_the_registry_and_outputs_logits(pooling):
    model = model_for(SPEC.model_copy(update={"pooling": pooling}))
    assert isinstance(model, TransformerClassifier)
    logits = model(token_ids(4, [8, 5, 3, 1]))
    assert logits.shape == (4, SPEC.num_classes) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padded_positions_do_not_change_the_logits(pooling):
    model = model_for(SPEC.model_copy(update={"pooling": pooling}))
    ids = token_ids(3, [5, 2, 8])
    expected = model(ids)
    with torch.no_grad():
        model.embeddings.tokens.weight[0] = torch.randn(SPEC.hidden_size) * 10  # what padding embeds to
    torch.testing.assert_close(model(ids), expected)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_trailing_padding_is_the_same_as_a_shorter_input(pooling):
    model = model_for(SPEC.model_copy(update={"pooling": pooling}))
    ids = token_ids(2, [5, 5])
    torch.testing.assert_close(model(ids[:, :5]), model(ids))


def test_a_sequence_of_padding_only_gives_finite_logits():
    model = model_for(SPEC.model_copy(update={"pooling": "mean"}))
    assert torch.isfinite(model(torch.zeros(2, SPEC.max_length, dtype=torch.int64))).all()


def test_longer_than_max_length_is_refused():
    with pytest.raises(ValueError, match="max_length is 8"):
        model_for(SPEC)(torch.ones(1, 9, dtype=torch.int64))


def test_capture_points_name_real_modules():
    points = capture_points(SPEC)
    assert points == {
        "embeddings": "embeddings",
        "hidden": ["layers.0", "layers.1"],
        "attention": ["layers.0.attention.probs", "layers.1.attention.probs"],
    }
    model = model_for(SPEC)
    for path in [points["embeddings"], *points["hidden"], *points["attention"]]:
        model.get_submodule(path)
    assert isinstance(model.get_submodule("head"), torch.nn.Linear)


def run_capturing(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Forward-hook outputs at every capture point, keyed by module path."""
    points, captured = capture_points(SPEC), {}
    for path in [points["embeddings"], *points["hidden"], *points["attention"]]:
        model.get_submodule(path).register_forward_hook(
            lambda module, args, output, path=path: captured.__setitem__(path, output)
        )
    model(ids)
    return captured


def test_hooks_capture_the_documented_shapes():
    points, lengths = capture_points(SPEC), [8, 5, 3]
    captured = run_capturing(model_for(SPEC), token_ids(3, lengths))
    batch, length, hidden, heads = 3, SPEC.max_length, SPEC.hidden_size, SPEC.num_heads
    assert captured["embeddings"].shape == (batch, length, hidden)
    for path in points["hidden"]:
        assert captured[path].shape == (batch, length, hidden)
    for path in points["attention"]:
        probs = captured[path]
        assert probs.shape == (batch, heads, length, length)
        torch.testing.assert_close(probs.sum(-1), torch.ones(batch, heads, length))
        for row, real in enumerate(lengths):
            assert (probs[row, :, :, real:] == 0).all()  # no attention to padding


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = model_for(SPEC)
    paths = export_student(model, SPEC, token_ids(3, [8, 4, 2]), tmp_path_factory.mktemp("transformer"))
    return model, torch.export.load(paths["student.pt2"])


@pytest.mark.parametrize("batch", [1, 5])
def test_exported_program_matches_eager_at_any_batch_size(exported, batch):
    model, program = exported
    ids = token_ids(batch, [8, 1, 6, 3, 7][:batch])
    with torch.no_grad():
        torch.testing.assert_close(program.module()(ids), model(ids))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch's own unflatten, on pytree internals
def test_an_unflattened_program_has_the_same_capture_points(exported):
    """What a pt2 teacher offers feature distillation: torch.export.unflatten keeps the module paths."""
    model, program = exported
    ids = token_ids(4, [8, 2, 5, 7])
    with torch.no_grad():
        expected, actual = run_capturing(model, ids), run_capturing(torch.export.unflatten(program), ids)
    assert actual.keys() == expected.keys()
    for path in expected:
        torch.testing.assert_close(actual[path], expected[path])
