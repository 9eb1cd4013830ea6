"""Layers of transformers text models in jobs: TinyBERT between a fine-tuned BERT folder and a student
derived from it, with and without the teacher-output cache, and feature pairs naming `hidden_states.N`."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.pipeline import JobFiles, run_distillation
from engine.plan.design import derive_spec
from engine.plan.errors import JobFailed
from engine.plan.hf_inputs import folder_spec
from engine.plan.specs import EngineJob, HFSpec
from tests.hf_text_factories import dog_texts, fine_tuned_bert_folder

from .factories import RecordingReporter, series

TINYBERT_TERMS = ("embedding_loss", "hidden_loss", "attention_loss")
MAX_LENGTH = 16


@dataclass
class BertTask:
    teacher_folder: Path
    train: Path
    teacher: HFSpec  # 2 layers of 32
    student: HFSpec  # derived: 1 layer of 16


@pytest.fixture(scope="module")
def bert_task(tmp_path_factory) -> BertTask:
    directory = tmp_path_factory.mktemp("bert")
    texts, labels = dog_texts(128, seed=0)
    folder = fine_tuned_bert_folder(directory / "teacher", texts, labels)
    lines = [json.dumps({"text": text, "label": label}) for text, label in zip(texts, labels, strict=True)]
    (directory / "train.jsonl").write_text("\n".join(lines) + "\n")
    teacher = folder_spec(json.loads((folder / "config.json").read_text()))
    student = derive_spec(teacher, depth=0.5, width=0.5).model_copy(update={"max_length": MAX_LENGTH})
    return BertTask(folder, directory / "train.jsonl", teacher, student)


def hf_job(task: BertTask, epochs: int = 4, **distillation) -> EngineJob:
    return EngineJob.model_validate(
        {
            "teachers": [{"format": "hf", "architecture": task.teacher}],
            "student_architecture": task.student,
            "distillation": {"temperature": 2.0, "alpha": 0.5, "beta": 0.5, "transformer": {}} | distillation,
            "training": {"epochs": epochs, "batch_size": 32, "learning_rate": 3e-3, "device": "cpu"},
        }
    )


def distill(job: EngineJob, task: BertTask, out: Path):
    reporter = RecordingReporter()
    return run_distillation(job, JobFiles([task.teacher_folder], task.train), out, reporter), reporter


def test_tinybert_between_transformers_encoders_lowers_each_term(bert_task, tmp_path):
    result, reporter = distill(hf_job(bert_task), bert_task, tmp_path)
    for term in TINYBERT_TERMS:
        values = series(reporter, term)
        assert len(values) == 4 and values == sorted(values, reverse=True), (term, values)
    for _epoch, _step, values in reporter.metric_calls:
        weighted = sum(values[term] for term in TINYBERT_TERMS)
        assert values["tinybert_loss"] == pytest.approx(weighted, rel=1e-5)
    assert "student.hf.zip" in result.artifacts  # the projections are no part of it


def test_the_teacher_cache_gives_the_tinybert_student_the_teacher_would(bert_task, tmp_path):
    (cached, _), (uncached, _) = (
        distill(hf_job(bert_task, epochs=2), bert_task, tmp_path / "on"),
        distill(hf_job(bert_task, epochs=2, teacher_cache="off"), bert_task, tmp_path / "off"),
    )
    assert cached.metrics["teacher_cache"]["status"] == "miss"
    assert uncached.metrics["teacher_cache"]["status"] == "off"
    assert [point["value"] for point in cached.series] == pytest.approx(
        [point["value"] for point in uncached.series], rel=1e-6
    )
    # A key's bias is left out: softmax ignores it, so its gradient is rounding alone, which Adam scales up.
    weights = [load_file(result.artifacts["student.safetensors"]) for result in (cached, uncached)]
    for name in (name for name in weights[0] if not name.endswith("key.bias")):
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=1e-5, atol=1e-6)


def test_feature_pairs_name_the_hidden_states_of_both_models(bert_task, tmp_path):
    pairs = [{"teacher": "hidden_states.2", "student": "hidden_states.1"}]  # [L, 16] -> [L, 32] per token
    job = hf_job(bert_task, epochs=3, transformer=None, features=pairs)
    _, reporter = distill(job, bert_task, tmp_path)
    feature_losses = series(reporter, "feature_loss")
    assert feature_losses[-1] < feature_losses[0]


def test_a_hidden_state_the_teacher_lacks_names_those_it_has(bert_task, tmp_path):
    pairs = [{"teacher": "hidden_states.3", "student": "hidden_states.1"}]
    with pytest.raises(JobFailed) as caught:
        distill(hf_job(bert_task, transformer=None, features=pairs), bert_task, tmp_path)
    assert caught.value.code == "unknown_layer"
    assert caught.value.message == (
        "the teacher 0 (bert, 2 layers) has no hidden_states.3: its numbered outputs are hidden_states.0 to "
        "hidden_states.2 and attentions.0 to attentions.1"
    )
