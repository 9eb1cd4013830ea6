"""Transformer students end to end in the engine: token-id and JSON Lines data, the tokenizer's
vocabulary, TinyBERT layer distillation, and layer taps on pt2 teachers."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.export import Dim

from engine.data.datasets import load_datasets
from engine.export.onnx_model import export_onnx
from engine.pipeline import JobFiles, run_distillation
from engine.plan.errors import JobFailed
from engine.plan.specs import EngineJob
from engine.teachers.loading import load_teacher
from tests.text_factories import (
    LENGTH,
    STUDENT_SPEC,
    TEACHER_SPEC,
    VOCAB,
    marked_sequences,
    train_text_teacher,
    word_tokenizer,
    write_jsonl,
)

from .factories import RecordingReporter, series

TINYBERT_TERMS = {"embedding_loss", "hidden_loss", "attention_loss", "tinybert_loss"}


@dataclass
class TextTask:
    teacher_path: Path
    pt2_teacher_path: Path
    train_npz: Path
    unlabeled_npz: Path
    train_jsonl: Path
    tokenizer_path: Path


@pytest.fixture(scope="module")
def text_task(tmp_path_factory) -> TextTask:
    """A 2-layer transformer teacher trained until it finds MARK, and the files a job reads."""
    directory = tmp_path_factory.mktemp("text")
    x, y = marked_sequences(512, seed=0)
    teacher = train_text_teacher(x, y)
    ids = torch.from_numpy(x)
    save_file(teacher.state_dict(), directory / "teacher.safetensors")
    program = torch.export.export(teacher, (ids[:2],), dynamic_shapes=({0: Dim("batch", min=1)},))
    torch.export.save(program, directory / "teacher.pt2")
    np.savez(directory / "train.npz", x=x, y=y)
    np.savez(directory / "unlabeled.npz", x=x)
    word_tokenizer().save(str(directory / "tokenizer.json"))
    return TextTask(
        teacher_path=directory / "teacher.safetensors",
        pt2_teacher_path=directory / "teacher.pt2",
        train_npz=directory / "train.npz",
        unlabeled_npz=directory / "unlabeled.npz",
        train_jsonl=write_jsonl(directory / "train.jsonl", x, y),
        tokenizer_path=directory / "tokenizer.json",
    )


def text_job(
    teacher=TEACHER_SPEC, student=STUDENT_SPEC, teacher_format="safetensors", **sections
) -> EngineJob:
    fields = {
        "teachers": [{"format": teacher_format, "architecture": teacher}],
        "student_architecture": student,
        "distillation": {"temperature": 2.0, "alpha": 0.5, "beta": 0.5, "transformer": {}},
        "training": {"epochs": 5, "batch_size": 32, "learning_rate": 5e-3, "device": "cpu"},
    }
    for name, values in sections.items():
        fields[name] = fields[name] | values
    return EngineJob.model_validate(fields)


def distill(job, text_task, tmp_path, train=None, teacher=None, tokenizer=None):
    reporter = RecordingReporter()
    files = JobFiles([teacher or text_task.teacher_path], train or text_task.train_npz, tokenizer=tokenizer)
    result = run_distillation(job, files, tmp_path / "out", reporter)
    return result, reporter


def failure(job, text_task, tmp_path, **files) -> JobFailed:
    with pytest.raises(JobFailed) as caught:
        distill(job, text_task, tmp_path, **files)
    return caught.value


def test_tinybert_teaches_a_one_layer_student_and_reports_its_terms(text_task, tmp_path):
    result, reporter = distill(text_job(), text_task, tmp_path)
    assert result.metrics["teacher"]["accuracy"] > 0.95
    assert result.metrics["student"]["accuracy"] > 0.85  # chance is 0.5
    hidden = series(reporter, "hidden_loss")
    assert len(hidden) == 5 and hidden[-1] < 0.5 * hidden[0]
    for _epoch, _step, values in reporter.metric_calls:
        assert TINYBERT_TERMS <= set(values)
        weighted = values["embedding_loss"] + values["hidden_loss"] + values["attention_loss"]
        assert values["tinybert_loss"] == pytest.approx(weighted, rel=1e-5)
        expected = 0.5 * values["soft_loss"] + 0.5 * values["hard_loss"] + values["tinybert_loss"]
        assert values["loss"] == pytest.approx(expected, rel=1e-5)
    # The projections are not part of the student: the exported program runs int64 ids alone.
    program = torch.export.load(result.artifacts["student.pt2"]).module()
    assert sum(p.numel() for p in program.parameters()) == result.metrics["student"]["parameters"]
    assert program(torch.from_numpy(marked_sequences(3, seed=1)[0])).shape == (3, 2)


def test_weights_scale_the_terms_and_zero_weights_are_skipped(text_task, tmp_path):
    weights = {"embedding_weight": 0.0, "hidden_weight": 2.0, "attention_weight": 0.0}
    job = text_job(distillation={"transformer": weights}, training={"epochs": 1})
    _, reporter = distill(job, text_task, tmp_path)
    values = reporter.metric_calls[0][2]
    assert values["embedding_loss"] == values["attention_loss"] == 0.0
    assert values["tinybert_loss"] == pytest.approx(2.0 * values["hidden_loss"], rel=1e-5)


def test_tinybert_alone_trains_on_unlabeled_data(text_task, tmp_path):
    job = text_job(distillation={"alpha": 0.0, "beta": 0.0}, training={"epochs": 3})
    result, reporter = distill(job, text_task, tmp_path, train=text_task.unlabeled_npz)
    assert "hard_loss" not in reporter.metric_calls[0][2]
    assert series(reporter, "hidden_loss")[-1] < series(reporter, "hidden_loss")[0]
    assert result.metrics["student"]["accuracy"] is None


def test_json_lines_are_tokenized_with_the_tokenizer_file(text_task, tmp_path):
    job = text_job(training={"epochs": 3})
    result, reporter = distill(
        job, text_task, tmp_path, train=text_task.train_jsonl, tokenizer=text_task.tokenizer_path
    )
    assert result.metrics["teacher"]["accuracy"] > 0.95  # the same ids the teacher was trained on
    assert result.metrics["student"]["accuracy"] > 0.7
    events = " ".join(message for _, message in reporter.events)
    assert f"Tokenizer: {VOCAB} token ids" in events
    assert f"sample shape [{LENGTH}]" in events


def test_json_lines_need_a_tokenizer(text_task, tmp_path):
    error = failure(text_job(), text_task, tmp_path, train=text_task.train_jsonl)
    assert error.code == "tokenizer_required" and "dataset.tokenizer_file_id" in error.message


@pytest.mark.parametrize("model", ["student", "teacher"])
def test_a_tokenizer_beyond_a_models_vocabulary_fails(text_task, tmp_path, model):
    small = {"vocab_size": VOCAB - 4}
    job = text_job(
        teacher=TEACHER_SPEC.model_copy(update=small) if model == "teacher" else TEACHER_SPEC,
        student=STUDENT_SPEC.model_copy(update=small) if model == "student" else STUDENT_SPEC,
    )
    error = failure(job, text_task, tmp_path, train=text_task.train_jsonl, tokenizer=text_task.tokenizer_path)
    assert error.code == "vocabulary_mismatch"
    assert f"the tokenizer has {VOCAB} token ids but the {model}'s vocab_size is {VOCAB - 4}" in error.message


@pytest.mark.parametrize(
    ("x", "code", "phrase"),
    [
        (np.full((8, LENGTH), VOCAB, dtype=np.int64), "vocabulary_mismatch", f"token id {VOCAB}"),
        (np.ones((8, LENGTH + 2), dtype=np.int64), "incompatible_shapes", f"max_length is {LENGTH}"),
        (np.ones((8, LENGTH), dtype=np.float32), "dataset_invalid", "token ids must be integers"),
    ],
    ids=["id beyond vocab_size", "longer than max_length", "float features"],
)
def test_token_ids_the_student_cannot_read_fail_before_training(text_task, tmp_path, x, code, phrase):
    np.savez(tmp_path / "ids.npz", x=x, y=np.arange(8) % 2)
    reporter = RecordingReporter()
    with pytest.raises(JobFailed) as caught:
        run_distillation(
            text_job(), JobFiles([text_task.teacher_path], tmp_path / "ids.npz"), tmp_path, reporter
        )
    assert caught.value.code == code and phrase in caught.value.message
    assert reporter.phases == ["validating"]


@pytest.mark.parametrize(
    ("layer_map", "phrase"),
    [([2], "entries [2] are not teacher layer indices"), ([0, 1], "layer_map has 2 entries")],
)
def test_a_layer_map_that_does_not_fit_fails(text_task, tmp_path, layer_map, phrase):
    job = text_job(distillation={"transformer": {"layer_map": layer_map}})
    error = failure(job, text_task, tmp_path)
    assert error.code == "invalid_layer_map" and phrase in error.message


def test_tinybert_needs_transformers_of_known_architecture(text_task, tmp_path):
    job = text_job(teacher=None, teacher_format="pt2")
    error = failure(job, text_task, tmp_path, teacher=text_task.pt2_teacher_path)
    assert error.code == "transformer_required" and "pt2" in error.message


def test_an_explicit_layer_map_picks_the_teacher_layer(text_task, tmp_path):
    # Student layer 0 reads teacher layer 0 instead of the uniform map's last layer.
    job = text_job(distillation={"transformer": {"layer_map": [0]}}, training={"epochs": 1})
    _, uniform = distill(text_job(training={"epochs": 1}), text_task, tmp_path)
    _, mapped = distill(job, text_task, tmp_path)
    assert series(mapped, "hidden_loss") != series(uniform, "hidden_loss")


def test_validation_token_ids_are_padded_to_the_training_length(text_task, tmp_path):
    x, y = marked_sequences(20, seed=2)
    np.savez(tmp_path / "short.npz", x=x[:, :8], y=y)
    files = JobFiles([text_task.teacher_path], text_task.train_npz, tmp_path / "short.npz")
    train, validation = load_datasets(text_job(), files, RecordingReporter())
    assert validation.x.shape == (20, LENGTH) and validation.x.dtype == torch.int64
    assert (validation.x[:, 8:] == 0).all() and torch.equal(validation.x[:, :8], torch.from_numpy(x[:, :8]))


def test_feature_pairs_tap_a_pt2_teacher(text_task, tmp_path):
    """pt2 teachers are unflattened, so their layers are reachable by path like a safetensors teacher's."""
    pairs = [{"teacher": "layers.1", "student": "layers.0"}]  # [L, 16] -> [L, 32] per token
    job = text_job(
        teacher=None,
        teacher_format="pt2",
        distillation={"transformer": None, "features": pairs},
        training={"epochs": 3},
    )
    result, reporter = distill(job, text_task, tmp_path, teacher=text_task.pt2_teacher_path)
    feature_losses = series(reporter, "feature_loss")
    assert feature_losses[-1] < feature_losses[0]
    assert result.metrics["teacher"]["accuracy"] > 0.95


def test_feature_pairs_tap_a_pt2_mlp_teacher(make_job, blob_task, tmp_path):
    program = torch.export.export(
        blob_task.teacher, (torch.randn(2, 8),), dynamic_shapes=({0: Dim("batch", min=1)},)
    )
    torch.export.save(program, tmp_path / "teacher.pt2")
    pairs = [{"teacher": "hidden.1", "student": "hidden.0"}]
    job = make_job(teacher_format="pt2", teacher_architecture=None, distillation={"features": pairs})
    reporter = RecordingReporter()
    run_distillation(
        job, JobFiles([tmp_path / "teacher.pt2"], blob_task.train_path), tmp_path / "out", reporter
    )
    assert series(reporter, "feature_loss")[-1] < series(reporter, "feature_loss")[0]


def test_a_tapped_pt2_teacher_is_unflattened_and_falls_back_to_one_graph(text_task, monkeypatch):
    ids = torch.from_numpy(marked_sequences(4, seed=3)[0])
    teacher = load_teacher(text_task.pt2_teacher_path, "pt2", layers=["layers.1.attention.probs"])
    assert isinstance(teacher.get_submodule("layers.1.attention.probs"), torch.nn.Module)
    untapped = load_teacher(text_task.pt2_teacher_path, "pt2")  # one graph: faster, no layers to hook
    with torch.no_grad():
        torch.testing.assert_close(untapped(ids), teacher(ids))

    def refuse(program):
        raise RuntimeError("cannot unflatten")

    monkeypatch.setattr(torch.export, "unflatten", refuse)
    flat = load_teacher(text_task.pt2_teacher_path, "pt2", layers=["layers.1.attention.probs"])
    with torch.no_grad():
        torch.testing.assert_close(flat(ids), teacher(ids))


class MaskedInputs(torch.nn.Module):
    """A text teacher as Hugging Face exports them: token ids and an attention mask (1 where not padding)."""

    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher

    def forward(self, input_ids, attention_mask):
        return self.teacher(input_ids * attention_mask)  # the same ids only when the mask is right


def test_an_onnx_text_teacher_gets_its_attention_mask_from_the_ids(text_task, tmp_path):
    teacher = load_teacher(text_task.teacher_path, "safetensors", TEACHER_SPEC)
    ids = torch.from_numpy(marked_sequences(4, seed=3)[0])
    batch = Dim("batch", min=1)
    program = torch.export.export(
        MaskedInputs(teacher), (ids, (ids != 0).long()), dynamic_shapes=({0: batch}, {0: batch})
    )
    path = export_onnx(program, tmp_path).rename(tmp_path / "teacher.onnx")
    onnx_teacher = load_teacher(path, "onnx")
    with torch.no_grad():
        torch.testing.assert_close(onnx_teacher(ids), teacher(ids), rtol=1e-4, atol=1e-4)
    job = text_job(
        teacher=None, teacher_format="onnx", distillation={"transformer": None}, training={"epochs": 2}
    )
    result, _ = distill(job, text_task, tmp_path, teacher=path)
    assert result.metrics["teacher"]["accuracy"] > 0.95


def test_the_teacher_cache_gives_the_tinybert_student_the_teacher_would(text_task, tmp_path):
    job = text_job(training={"epochs": 2})
    off = job.model_copy(
        update={"distillation": job.distillation.model_copy(update={"teacher_cache": "off"})}
    )
    (cached, _), (uncached, _) = (
        distill(job, text_task, tmp_path / "on"),
        distill(off, text_task, tmp_path / "off"),
    )
    assert cached.metrics["teacher_cache"]["status"] == "miss"
    # Equal up to rounding: the teacher's outputs over the cache's batches and over the shuffled training
    # batches differ in the last bits on some CPUs. A key's bias is left out: softmax ignores it, so its
    # gradient is such rounding alone, which Adam scales up to full steps.
    assert [point["value"] for point in cached.series] == pytest.approx(
        [point["value"] for point in uncached.series], rel=1e-6
    )
    weights = [load_file(result.artifacts["student.safetensors"]) for result in (cached, uncached)]
    for name in (name for name in weights[0] if not name.endswith("attention.key.bias")):
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=1e-5, atol=1e-6)
