"""ONNX teachers: run by ONNX Runtime like the torch model they came from, their named values tapped for
feature pairs, and every file that is not a model it can run refused with what to change."""

import onnx
import pytest
import torch

from engine.models.hooks import LayerTaps
from engine.models.registry import build_model, count_parameters
from engine.pipeline import run_distillation
from engine.plan.errors import JobFailed
from engine.plan.onnx_file import OnnxFileRejected, check_onnx_file
from engine.plan.specs import CNNSpec, JobFiles
from engine.teachers.loading import load_teacher
from tests.engine.factories import RecordingReporter, series
from tests.factories import save_onnx_teacher


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    torch.manual_seed(0)
    source = build_model(CNNSpec(input_shape=[1, 8, 8], num_classes=3, widths=[4, 8])).eval()
    path = save_onnx_teacher(
        tmp_path_factory.mktemp("onnx") / "teacher.onnx", source, torch.randn(2, 1, 8, 8)
    )
    return source, path


def graph_values(path) -> list[str]:
    return [output for node in onnx.load(path).graph.node for output in node.output]


def test_an_onnx_teacher_computes_what_its_torch_model_does(cnn):
    source, path = cnn
    teacher = load_teacher(path, "onnx")
    # The exporter folds each BatchNorm into its convolution: fewer parameters, the same function.
    assert 0.9 * count_parameters(source) < count_parameters(teacher) <= count_parameters(source)
    for batch in (1, 5):
        x = torch.randn(batch, 1, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(teacher(x), source(x), rtol=1e-4, atol=1e-5)


def test_a_named_value_of_the_graph_is_a_layer_that_hooks_read(cnn):
    _, path = cnn
    layer = next(name for name in graph_values(path) if "relu" in name.lower())
    teacher = load_teacher(path, "onnx", layers=[layer])
    taps = LayerTaps(teacher, [layer], "teacher")
    x = torch.randn(3, 1, 8, 8)
    teacher(x)
    assert taps.outputs[layer].shape[:2] == (3, 4) and taps.outputs[layer].min() >= 0  # the first ReLU's
    untapped = load_teacher(path, "onnx")
    torch.testing.assert_close(teacher(x), untapped(x))


def test_an_unknown_layer_names_the_graph_values(cnn):
    _, path = cnn
    with pytest.raises(JobFailed) as error:
        load_teacher(path, "onnx", layers=["features.0"])
    assert error.value.code == "unknown_layer"
    assert graph_values(path)[0] in error.value.message


def test_feature_pairs_read_an_onnx_teachers_values(make_job, blob_task, tmp_path):
    path = save_onnx_teacher(tmp_path / "teacher.onnx", blob_task.teacher, torch.randn(2, 8))
    hidden = next(name for name in graph_values(path) if "relu" in name.lower())
    job = make_job(
        teacher_format="onnx",
        teacher_architecture=None,
        distillation={"features": [{"teacher": hidden, "student": "hidden.0"}]},
    )
    reporter = RecordingReporter()
    result = run_distillation(job, JobFiles([path], blob_task.train_path), tmp_path / "out", reporter)
    assert series(reporter, "feature_loss")[-1] < series(reporter, "feature_loss")[0]
    assert result.metrics["teacher"]["parameters"] == count_parameters(blob_task.teacher)
    assert result.metrics["teacher"]["accuracy"] > 0.95
    assert result.metrics["teacher"]["latency_ms"]["batch_1"] > 0


def test_a_fixed_batch_size_is_refused_with_how_to_export(tmp_path):
    source = torch.nn.Linear(4, 2).eval()
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(
        source, (torch.randn(1, 4),), str(path), dynamo=True, external_data=False, verbose=False
    )
    with pytest.raises(JobFailed) as error:
        load_teacher(path, "onnx")
    assert error.value.code == "teacher_load_failed" and "dynamic batch" in error.value.message


TRUNCATIONS = {
    "first byte": lambda size: 1,
    "half": lambda size: size // 2,
    "all but the last": lambda size: size - 1,
}


@pytest.mark.parametrize("kept", TRUNCATIONS.values(), ids=TRUNCATIONS.keys())
def test_a_truncated_model_is_refused(cnn, tmp_path, kept):
    data = cnn[1].read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: kept(len(data))])
    with pytest.raises(JobFailed) as error:
        load_teacher(path, "onnx")
    assert error.value.code == "teacher_load_failed" and "Truncated" in error.value.message


def test_external_data_is_refused_before_onnx_runtime_reads_any_path(cnn, tmp_path):
    """ONNX Runtime would read an external tensor from wherever its `location` points, /etc/shadow too."""
    model = onnx.load(cnn[1])
    onnx.save_model(
        model, tmp_path / "m.onnx", save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    with pytest.raises(OnnxFileRejected, match="external data"):
        check_onnx_file(tmp_path / "m.onnx")
    tensor = model.graph.initializer[0]
    tensor.data_location = onnx.TensorProto.EXTERNAL  # the location flag alone, no entries
    onnx.save_model(model, tmp_path / "flag.onnx")
    with pytest.raises(JobFailed, match="external data"):
        load_teacher(tmp_path / "flag.onnx", "onnx")


def test_a_model_onnx_runtime_cannot_run_is_a_load_failure(tmp_path):
    node = onnx.helper.make_node("NoSuchOperator", ["x"], ["y"])
    graph = onnx.helper.make_graph(
        [node], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 2])],
    )  # fmt: skip
    onnx.save_model(onnx.helper.make_model(graph), tmp_path / "bad.onnx")
    with pytest.raises(JobFailed) as error:
        load_teacher(tmp_path / "bad.onnx", "onnx")
    assert error.value.code == "teacher_load_failed" and "ONNX Runtime cannot run" in error.value.message


def test_nesting_is_bounded(tmp_path):
    """Graphs inside If nodes inside graphs: a hostile file nests them until a recursive parser overflows."""
    output = [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])]
    leaf = inner = onnx.helper.make_graph([], "g", [], output)
    for _ in range(15):  # 45 messages deep
        node = onnx.helper.make_node("If", ["c"], ["x"], then_branch=inner, else_branch=leaf)
        inner = onnx.helper.make_graph([node], "g", [], output)
    onnx.save_model(onnx.helper.make_model(inner), tmp_path / "deep.onnx")
    with pytest.raises(OnnxFileRejected, match="nests graphs"):
        check_onnx_file(tmp_path / "deep.onnx")
