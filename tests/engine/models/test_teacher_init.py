"""Students derived from their teacher: the spec, which teacher layers they take, the copied weights."""

import numpy as np
import pytest
import torch

from engine.models.registry import build_model
from engine.models.teacher_init import init_from_teacher
from engine.plan.design import derive_spec, layer_selection
from engine.plan.errors import JobFailed
from engine.plan.specs import CNNSpec, MLPSpec, TransformerSpec
from tests.engine.factories import FEATURES, NUM_CLASSES, gaussian_blobs, train_classifier

MLP_TEACHER = MLPSpec(input_shape=[FEATURES], num_classes=NUM_CLASSES, hidden_sizes=[32, 32, 32, 32])
CNN_TEACHER = CNNSpec(input_shape=[1, 4, 4], num_classes=NUM_CLASSES, widths=[8, 16], blocks_per_stage=4)
TRANSFORMER_TEACHER = TransformerSpec(
    vocab_size=50,
    max_length=6,
    num_classes=3,
    hidden_size=16,
    num_layers=4,
    num_heads=2,
    intermediate_size=32,
)


def blob_images(num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The blobs drawn as 1x4x4 images: 8 features plus their negatives."""
    x, y = gaussian_blobs(num_samples)
    return np.concatenate([x, -x], axis=1).reshape(-1, 1, 4, 4), y


@pytest.fixture(scope="module")
def mlp_teacher():
    torch.manual_seed(0)
    return train_classifier(build_model(MLP_TEACHER), *gaussian_blobs(200), steps=20)


@pytest.fixture(scope="module")
def cnn_teacher():
    torch.manual_seed(0)
    return train_classifier(build_model(CNN_TEACHER), *blob_images(64), steps=5)


@pytest.fixture(scope="module")
def transformer_teacher():
    torch.manual_seed(0)
    return build_model(TRANSFORMER_TEACHER).eval()


def derived_student(teacher, teacher_spec, depth, width):
    student_spec = derive_spec(teacher_spec, depth, width)
    torch.manual_seed(1)
    student = build_model(student_spec)
    report = init_from_teacher(student, teacher.state_dict(), student_spec, teacher_spec)
    return student.eval(), report


# derive_spec


def test_mlp_keeps_the_selected_layers_narrowed():
    teacher = MLPSpec(input_shape=[3, 4], num_classes=5, hidden_sizes=[64, 48, 32, 16], activation="gelu")
    student = derive_spec(teacher, depth=0.5, width=0.5)
    assert student.hidden_sizes == [32, 16]  # teacher layers 0 and 2
    assert (student.input_shape, student.num_classes, student.activation) == ([3, 4], 5, "gelu")


def test_mlp_without_hidden_layers_stays_without():
    teacher = MLPSpec(input_shape=[8], num_classes=2)
    assert derive_spec(teacher, depth=0.5, width=0.5).hidden_sizes == []


def test_cnn_has_fewer_blocks_and_narrower_stages():
    teacher = CNNSpec(input_shape=[3, 32, 32], num_classes=10, widths=[16, 32, 64], blocks_per_stage=3)
    student = derive_spec(teacher, depth=0.5, width=0.5)
    assert (student.blocks_per_stage, student.widths) == (2, [8, 16, 32])  # 1.5 rounds half up
    assert (student.input_shape, student.num_classes) == ([3, 32, 32], 10)


def test_transformer_width_stays_divisible_by_the_heads():
    teacher = TransformerSpec(
        vocab_size=1000, max_length=64, num_classes=3, hidden_size=128, num_layers=6, num_heads=4
    )
    student = derive_spec(teacher, depth=0.5, width=0.3)
    assert (student.num_layers, student.hidden_size, student.intermediate_size) == (3, 40, 154)
    assert student.num_heads == 4 and student.hidden_size % student.num_heads == 0
    assert (student.vocab_size, student.max_length, student.num_classes) == (1000, 64, 3)


def test_transformer_width_respects_the_minimum_hidden_size():
    teacher = TransformerSpec(vocab_size=10, max_length=4, num_classes=2, hidden_size=12, num_heads=3)
    student = derive_spec(teacher, depth=1.0, width=0.1)
    assert (student.hidden_size, student.num_heads) == (9, 3)


@pytest.mark.parametrize("teacher", [MLP_TEACHER, CNN_TEACHER, TRANSFORMER_TEACHER], ids=lambda s: s.family)
def test_full_depth_and_width_is_the_teacher(teacher):
    assert derive_spec(teacher, depth=1.0, width=1.0) == teacher


@pytest.mark.parametrize("teacher", [MLP_TEACHER, CNN_TEACHER, TRANSFORMER_TEACHER], ids=lambda s: s.family)
def test_tiny_depth_keeps_one_layer(teacher):
    student = derive_spec(teacher, depth=0.01, width=0.01)
    layers = {"mlp": lambda: len(student.hidden_sizes), "cnn": lambda: student.blocks_per_stage}
    assert layers.get(student.family, lambda: student.num_layers)() == 1


@pytest.mark.parametrize("depth, width", [(0.0, 0.5), (-0.5, 0.5), (1.5, 0.5), (0.5, 0.0), (0.5, 2.0)])
def test_fractions_outside_zero_to_one_are_refused(depth, width):
    with pytest.raises(ValueError, match="must be in"):
        derive_spec(MLP_TEACHER, depth, width)


# layer_selection


@pytest.mark.parametrize(
    "teacher_count, student_count, expected",
    [(12, 6, [0, 2, 4, 6, 8, 10]), (4, 2, [0, 2]), (3, 1, [0]), (5, 5, [0, 1, 2, 3, 4]), (5, 3, [0, 1, 3])],
)
def test_layer_selection_is_evenly_spaced(teacher_count, student_count, expected):
    assert layer_selection(teacher_count, student_count) == expected


def test_layer_selection_refuses_more_student_layers_than_teacher_layers():
    with pytest.raises(ValueError):
        layer_selection(2, 3)


# init_from_teacher


def test_mlp_student_takes_the_selected_teacher_layers(mlp_teacher):
    student, report = derived_student(mlp_teacher, MLP_TEACHER, depth=0.5, width=1.0)
    assert report.layer_map == [0, 2]
    for student_layer, teacher_layer in enumerate(report.layer_map):
        for name in ("weight", "bias"):
            expected = mlp_teacher.hidden[teacher_layer].linear.get_parameter(name)
            assert torch.equal(student.hidden[student_layer].linear.get_parameter(name), expected)
    assert torch.equal(student.head.weight, mlp_teacher.head.weight)
    assert (report.sliced, report.skipped) == ([], {})
    assert len(report.copied) == len(student.state_dict())


def test_cnn_student_takes_the_selected_blocks_and_batchnorm_statistics(cnn_teacher):
    student, report = derived_student(cnn_teacher, CNN_TEACHER, depth=0.5, width=1.0)
    assert report.layer_map == [0, 2]
    teacher_block, student_block = cnn_teacher.stages[1][2], student.stages[1][1]
    assert torch.equal(student_block.conv2.weight, teacher_block.conv2.weight)
    assert torch.equal(student_block.bn1.running_var, teacher_block.bn1.running_var)
    assert torch.equal(student.stages[1][0].shortcut[0].weight, cnn_teacher.stages[1][0].shortcut[0].weight)
    assert "stages.1.1.bn1.running_mean" in report.copied and not report.sliced and not report.skipped


@pytest.mark.parametrize("family", ["mlp", "cnn", "transformer"])
def test_full_depth_and_width_reproduces_the_teacher(family, request):
    teacher = request.getfixturevalue(f"{family}_teacher")
    teacher_spec = {"mlp": MLP_TEACHER, "cnn": CNN_TEACHER, "transformer": TRANSFORMER_TEACHER}[family]
    student, report = derived_student(teacher, teacher_spec, depth=1.0, width=1.0)
    x = torch.from_numpy(
        {
            "mlp": lambda: gaussian_blobs(20)[0],
            "cnn": lambda: blob_images(20)[0],
            "transformer": lambda: np.random.default_rng(0).integers(0, 50, size=(20, 6)),
        }[family]()
    )
    with torch.no_grad():
        assert torch.equal(student(x), teacher(x))
    assert len(report.copied) == len(teacher.state_dict())


def test_narrower_mlp_gets_the_leading_slices(mlp_teacher):
    student, report = derived_student(mlp_teacher, MLP_TEACHER, depth=0.5, width=0.5)
    assert torch.equal(student.hidden[0].linear.weight, mlp_teacher.hidden[0].linear.weight[:16])
    assert torch.equal(student.hidden[1].linear.weight, mlp_teacher.hidden[2].linear.weight[:16, :16])
    assert torch.equal(student.hidden[1].linear.bias, mlp_teacher.hidden[2].linear.bias[:16])
    assert torch.equal(student.head.weight, mlp_teacher.head.weight[:, :16])
    assert torch.equal(student.head.bias, mlp_teacher.head.bias)
    assert set(report.sliced) == {
        "hidden.0.linear.weight",
        "hidden.0.linear.bias",
        "hidden.1.linear.weight",
        "hidden.1.linear.bias",
        "head.weight",
    }
    assert report.copied == ["head.bias"]
    assert report.summary == (
        "Student initialised from the teacher (teacher layers 0, 2): 1 tensors copied, "
        "5 cut to their leading slice, 0 left as initialised."
    )


def test_narrower_cnn_gets_leading_channels_and_statistics(cnn_teacher):
    student, report = derived_student(cnn_teacher, CNN_TEACHER, depth=0.25, width=0.5)
    teacher_block = cnn_teacher.stages[1][0]
    assert torch.equal(student.stem[0].weight, cnn_teacher.stem[0].weight[:4])
    assert torch.equal(student.stages[1][0].conv1.weight, teacher_block.conv1.weight[:8, :4])
    assert torch.equal(student.stages[1][0].bn2.running_var, teacher_block.bn2.running_var[:8])
    assert "stages.1.0.bn2.running_var" in report.sliced
    assert "stages.1.0.bn2.num_batches_tracked" in report.copied


def test_narrower_transformer_takes_selected_layers_and_leading_slices(transformer_teacher):
    student, report = derived_student(transformer_teacher, TRANSFORMER_TEACHER, depth=0.5, width=0.5)
    assert report.layer_map == [0, 2]
    teacher_layer = transformer_teacher.layers[2]
    assert torch.equal(student.layers[1].attention.query.weight, teacher_layer.attention.query.weight[:8, :8])
    assert torch.equal(student.layers[1].output_norm.bias, teacher_layer.output_norm.bias[:8])
    tokens = transformer_teacher.embeddings.tokens.weight
    assert torch.equal(student.embeddings.tokens.weight, tokens[:, :8])
    assert not report.skipped


def test_tensors_larger_than_the_teacher_keep_their_initialisation(mlp_teacher):
    wider = MLPSpec(input_shape=[FEATURES], num_classes=NUM_CLASSES, hidden_sizes=[48])
    torch.manual_seed(1)
    student = build_model(wider)
    fresh = student.hidden[0].linear.weight.clone()
    report = init_from_teacher(student, mlp_teacher.state_dict(), wider, MLP_TEACHER)
    assert torch.equal(student.hidden[0].linear.weight, fresh)
    assert "[48, 8] exceeds the teacher's [32, 8]" in report.skipped["hidden.0.linear.weight"]
    assert set(report.skipped) == {"hidden.0.linear.weight", "hidden.0.linear.bias", "head.weight"}


def test_tensors_missing_from_the_teacher_are_skipped(mlp_teacher):
    state = {name: tensor for name, tensor in mlp_teacher.state_dict().items() if not name.startswith("head")}
    student = build_model(MLP_TEACHER)
    report = init_from_teacher(student, state, MLP_TEACHER, MLP_TEACHER)
    assert report.skipped == {
        "head.weight": "the teacher has no such tensor",
        "head.bias": "the teacher has no such tensor",
    }


def test_another_family_is_refused(mlp_teacher):
    with pytest.raises(JobFailed) as error:
        init_from_teacher(build_model(CNN_TEACHER), mlp_teacher.state_dict(), CNN_TEACHER, MLP_TEACHER)
    assert error.value.code == "init_family_mismatch"


def test_a_student_deeper_than_its_teacher_is_refused(mlp_teacher):
    deeper = MLP_TEACHER.model_copy(update={"hidden_sizes": [32] * 5})
    with pytest.raises(JobFailed) as error:
        init_from_teacher(build_model(deeper), mlp_teacher.state_dict(), deeper, MLP_TEACHER)
    assert error.value.code == "init_student_deeper"
