"""How training steps compute: reduced precision on the CPU when asked (bfloat16 autocast; float16 with a
gradient scaler), and torch.compile with its fallback. The GPU paths (TF32, channels-last, data kept on the
device) are checked on a lent GPU, not here: CI has none."""

import pytest
import torch
from safetensors.torch import load_file

from engine.pipeline import JobFiles, run_distillation
from engine.runtime.compute import resolve_precision
from tests.engine.factories import RecordingReporter


def run(job, blob_task, out_dir):
    reporter = RecordingReporter()
    result = run_distillation(
        job, JobFiles([blob_task.teacher_path], blob_task.train_path), out_dir, reporter
    )
    return result, reporter


def test_the_cpu_trains_in_float32_unless_asked():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).name == "fp32"
    assert resolve_precision("bf16", cpu).name == "bf16"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_a_good_student(make_job, blob_task, tmp_path, precision):
    result, _ = run(make_job(training={"precision": precision}), blob_task, tmp_path)
    assert result.metrics["student"]["accuracy"] > 0.9
    weights = load_file(result.artifacts["student.safetensors"])
    assert all(tensor.dtype == torch.float32 for tensor in weights.values())  # the student stays float32


def test_bfloat16_steps_give_the_same_student_with_and_without_the_cache(make_job, blob_task, tmp_path):
    job = make_job(
        training={"precision": "bf16"},
        distillation={"features": [{"teacher": "hidden.1", "student": "hidden.0"}]},
    )
    off = job.model_copy(
        update={"distillation": job.distillation.model_copy(update={"teacher_cache": "off"})}
    )
    (cached, _), (uncached, _) = run(job, blob_task, tmp_path / "on"), run(off, blob_task, tmp_path / "off")
    assert cached.series == uncached.series
    weights = [load_file(result.artifacts["student.safetensors"]) for result in (cached, uncached)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_a_compiled_student_trains_and_is_exported_as_the_plain_model(make_job, blob_task, tmp_path):
    result, reporter = run(make_job(training={"compile": True, "epochs": 2}), blob_task, tmp_path)
    assert result.metrics["student"]["accuracy"] > 0.9
    assert any(m.startswith("The student is compiled with torch.compile") for _, m in reporter.events)
    program = torch.export.load(result.artifacts["student.pt2"]).module()
    assert program(torch.randn(3, 8)).shape == (3, 4)


def test_a_compiler_that_fails_leaves_the_student_training_without_it(
    make_job, blob_task, tmp_path, monkeypatch
):
    def failing_compile(function, **options):
        def compiled(*args, **kwargs):
            raise RuntimeError("InductorError: no working C++ compiler found\nmore lines")

        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    result, reporter = run(make_job(training={"compile": True, "epochs": 1}), blob_task, tmp_path)
    assert result.metrics["student"]["accuracy"] > 0.5
    reason = "RuntimeError: InductorError: no working C++ compiler found"
    warning = f"torch.compile failed ({reason}): the student trains without it."
    assert [m for level, m in reporter.events if level == "warning"] == [warning]
