"""A causal language model's job in the engine: a tiny llama or gpt2 teacher folder (random weights: a teacher
whose next-token distributions are far from the data's, so that what the student learns from it shows), a
student derived from it, text or prompts and completions; the student folder runs in transformers alone."""

import math
import zipfile
from pathlib import Path

import onnxruntime
import pytest
import torch
from safetensors.torch import load
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from engine import evaluate
from engine.losses.token_level import LMHead, TeacherLogits
from engine.losses.token_objective import TokenObjective, token_layers
from engine.models.hf.build import build_hf_model
from engine.pipeline import JobFiles, run_distillation
from engine.plan.design import derive_spec
from engine.plan.errors import JobFailed
from engine.plan.rules import check_job
from engine.plan.specs import DistillationConfig, EngineJob, HFSpec
from engine.train.checkpoints import Checkpoints
from tests.engine.factories import FolderStore, KilledAt, RecordingReporter, WorkerKilled, series
from tests.engine.test_hf_methods import spec_of
from tests.engine.train.test_checkpoints import without_timings
from tests.lm_factories import write_jsonl
from tests.lm_model_factories import LM_MAX_LENGTH, LM_VOCAB, TEXTS, lm_folder, lm_spec, lm_token_ids

EPOCHS = 3


def lm_job(teacher: Path, width: float = 1.0, **distillation) -> EngineJob:
    """A student of half the teacher's layers and `width` of its width, learning from it by `distillation`."""
    teacher_spec = spec_of(teacher)
    student = derive_spec(teacher_spec, 0.5, width).model_copy(update={"max_length": LM_MAX_LENGTH})
    return EngineJob.model_validate(
        {
            "teachers": [{"format": "hf", "architecture": teacher_spec}],
            "student_architecture": student,
            "student_init": "teacher",
            "distillation": {"temperature": 1.0, "alpha": 1.0, "beta": 0.0} | distillation,
            "training": {"epochs": EPOCHS, "batch_size": 4, "learning_rate": 3e-3, "device": "cpu"},
        }
    )


def distill(job: EngineJob, task, out_dir: Path, reporter=None, checkpoints=None):
    teacher, train = task
    reporter = reporter or RecordingReporter()
    return run_distillation(job, JobFiles([teacher], train), out_dir, reporter, checkpoints), reporter


def student_weights(result) -> dict[str, torch.Tensor]:
    with zipfile.ZipFile(result.artifacts["student.hf.zip"]) as archive:
        return load(archive.read("model.safetensors"))


def test_distillation_brings_the_student_closer_to_the_teacher_than_fine_tuning(lm_task, tmp_path):
    distilled, reporter = distill(lm_job(lm_task[0]), lm_task, tmp_path / "kd")
    fine_tuned, _ = distill(lm_job(lm_task[0], alpha=0.0, beta=1.0), lm_task, tmp_path / "ce")

    kl = series(reporter, "validation_kl")
    assert len(kl) == EPOCHS and kl[-1] < kl[0]
    assert distilled.metrics["kl_to_teacher"] < 0.5 * fine_tuned.metrics["kl_to_teacher"]
    assert distilled.metrics["agreement"] > fine_tuned.metrics["agreement"]
    # The teacher's random weights know nothing of the data: the student taught by the data alone fits it.
    assert fine_tuned.metrics["student"]["perplexity"] < distilled.metrics["student"]["perplexity"]


def test_a_student_trained_alone_never_runs_the_teacher_on_its_training_blocks(
    lm_task, tmp_path, monkeypatch
):
    teacher_reads, read = [], evaluate.teacher_tokens
    monkeypatch.setattr(evaluate, "teacher_tokens", lambda *args: teacher_reads.append(1) or read(*args))

    def reads(**distillation) -> tuple[int, int, set[str]]:
        teacher_reads.clear()
        _, reporter = distill(lm_job(lm_task[0], **distillation), lm_task, tmp_path / str(distillation))
        names = {name for _epoch, _step, values in reporter.metric_calls for name in values}
        return len(teacher_reads), reporter.progress_calls[-1][3], names

    for cache in ("off", "auto"):
        distilled, steps, distilled_series = reads(alpha=0.5, beta=0.5, teacher_cache=cache)
        alone, _, alone_series = reads(alpha=0.0, beta=1.0, teacher_cache=cache)
        # Without the cache the teacher runs on each training step; with it, once over the training blocks
        # for its table, one batch a step of an epoch. Either way it measures the student on the validation.
        assert alone == distilled - (steps if cache == "off" else steps // EPOCHS)
        assert {"soft_loss", "kl_to_teacher", "top1_agreement"} <= distilled_series
        assert not {"soft_loss", "kl_to_teacher", "top1_agreement"} & alone_series


def test_the_job_reports_each_loss_and_the_teacher_beside_the_student(lm_task, tmp_path):
    result, reporter = distill(lm_job(lm_task[0], alpha=0.5, beta=0.5), lm_task, tmp_path)
    metrics = result.metrics
    for name in (
        "loss",
        "soft_loss",
        "hard_loss",
        "kl_to_teacher",
        "top1_agreement",
        "validation_perplexity",
    ):
        assert len(series(reporter, name)) == EPOCHS, name
    assert metrics["task"] == "causal-lm"
    assert metrics["teacher"]["perplexity"] > 1 and metrics["student"]["perplexity"] > 1
    assert metrics["compression"] > 1 and metrics["tokens"] > 0
    assert set(metrics["student"]["latency_ms"]) == {"batch_1", "batch_64"}
    assert len(metrics["samples"]) == 3
    assert sum(message.startswith("Sample ") for _level, message in reporter.events) == 3
    assert set(result.artifacts) == {"student.hf.zip", "metrics.json"}


def test_the_student_folder_generates_in_transformers_as_the_job_showed(lm_task, tmp_path):
    result, _ = distill(lm_job(lm_task[0]), lm_task, tmp_path / "job")
    with zipfile.ZipFile(result.artifacts["student.hf.zip"]) as archive:
        archive.extractall(tmp_path / "student")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "student")
    generator = pipeline(
        "text-generation", model=model, tokenizer=AutoTokenizer.from_pretrained(tmp_path / "student")
    )
    for sample in result.metrics["samples"]:
        generated = generator(sample["prompt"], max_new_tokens=24, do_sample=False, return_full_text=False)
        assert generated[0]["generated_text"] == sample["student"]
    assert result.metrics["student"]["parameters"] == sum(p.numel() for p in model.parameters())


def test_the_student_as_onnx_agrees_with_it_and_a_failed_export_is_an_event(lm_task, tmp_path, monkeypatch):
    job = lm_job(lm_task[0]).model_copy(update={"export": ["onnx"]})
    result, _ = distill(job, lm_task, tmp_path / "onnx")
    onnx = result.metrics["onnx"]
    assert onnx["agreement"] == 1.0 and onnx["max_abs_difference"] < 1e-3 and onnx["bytes"] > 0
    session = onnxruntime.InferenceSession(
        str(result.artifacts["student.onnx"]), providers=["CPUExecutionProvider"]
    )
    ids = lm_token_ids(count=3, length=5)  # another batch size and length than the export's example
    (logits,) = session.run(None, {session.get_inputs()[0].name: ids.numpy()})
    assert logits.shape == (3, 5, LM_VOCAB)

    def fails(*_args, **_kwargs):
        raise JobFailed("export_failed", "the student could not be exported to ONNX (RuntimeError: no)")

    monkeypatch.setattr("engine.export.onnx_language_model.export_onnx", fails)
    result, reporter = distill(job, lm_task, tmp_path / "failed")
    assert result.metrics["onnx"] is None and "student.onnx" not in result.artifacts
    assert ("warning", "No student.onnx: the student could not be exported to ONNX (RuntimeError: no); the "
            "transformers folder is the student") in reporter.events  # fmt: skip


FEATURES = [
    {"student": "hidden_states.1", "teacher": "hidden_states.2", "loss": "cosine"},
    {"student": "hidden_states.2", "teacher": "hidden_states.4", "weight": 2.0},  # the last, normed
]


# GKD's steps on the student's own samples (which draw from the run's generator) resume as the others do.
ON_POLICY = {"share": 0.5, "max_new_tokens": 8, "prompt_tokens": 4}


RESUMED = {  # the objective, the step the worker dies at, the job's steps
    "token-level": ({}, 5, 18),
    "on-policy": ({"divergence": "jsd", "on_policy": ON_POLICY}, 5, 18),
    "hidden-state pairs, projected": ({"features": FEATURES, "width": 0.5}, 5, 18),
    "the reference alone, killed in its run": ({"alone_reference": True}, 25, 36),
}


@pytest.mark.parametrize("objective, kill_at, steps", RESUMED.values(), ids=RESUMED.keys())
def test_a_killed_worker_resumes_to_the_same_student(lm_task, tmp_path, objective, kill_at, steps):
    job = lm_job(lm_task[0], **objective)
    uninterrupted, _ = distill(job, lm_task, tmp_path / "whole")
    store = FolderStore(tmp_path / "store")
    with pytest.raises(WorkerKilled):
        distill(job, lm_task, tmp_path / "killed", KilledAt(kill_at=kill_at), Checkpoints(store, 0.0))
    resumed, reporter = distill(job, lm_task, tmp_path / "resumed", checkpoints=Checkpoints(store, 0.0))

    resumed_at = f"Resumed from the checkpoint at step {kill_at - 2} of {steps}"
    assert any(message.startswith(resumed_at) for _level, message in reporter.events)
    assert without_timings(resumed.metrics) == without_timings(uninterrupted.metrics)
    assert resumed.series == uninterrupted.series
    weights = [student_weights(result) for result in (resumed, uninterrupted)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[1])


def test_the_alone_reference_is_the_student_a_job_on_the_labels_alone_trains(lm_task, tmp_path):
    result, reporter = distill(lm_job(lm_task[0], alone_reference=True), lm_task, tmp_path / "both")
    alone, alone_reporter = distill(lm_job(lm_task[0], alpha=0.0, beta=1.0), lm_task, tmp_path / "alone")

    metrics = result.metrics
    assert series(reporter, "alone_validation_perplexity") == series(alone_reporter, "validation_perplexity")
    assert metrics["alone"]["perplexity"] == pytest.approx(alone.metrics["student"]["perplexity"], rel=1e-6)
    gap = metrics["alone"]["perplexity"] - metrics["teacher"]["perplexity"]
    closed = (metrics["alone"]["perplexity"] - metrics["student"]["perplexity"]) / gap if gap > 0 else None
    assert metrics["gap_closed"] == (None if closed is None else pytest.approx(closed))
    assert len(series(reporter, "validation_perplexity")) == EPOCHS
    epoch, epochs, step, total_steps = reporter.progress_calls[-1]
    assert (epoch, epochs, step) == (2 * EPOCHS, 2 * EPOCHS, total_steps)


def test_prompts_teach_only_their_completions_and_prompt_the_samples(tmp_path):
    teacher = lm_folder(tmp_path / "teacher")
    records = [{"prompt": text[:10], "completion": text[10:20]} for text in TEXTS[:3]]
    train = write_jsonl(tmp_path / "train.jsonl", records * 4)
    validation = write_jsonl(tmp_path / "validation.jsonl", records)
    job = lm_job(teacher)
    job = job.model_copy(update={"training": job.training.model_copy(update={"epochs": 1})})
    result = run_distillation(
        job, JobFiles([teacher], train, validation), tmp_path / "out", RecordingReporter()
    )

    tokenizer = AutoTokenizer.from_pretrained(teacher)
    completions = [tokenizer(record["completion"], add_special_tokens=False).input_ids for record in records]
    assert result.metrics["tokens"] == sum(len(ids) + 1 for ids in completions)  # and each one's EOS
    assert [sample["prompt"] for sample in result.metrics["samples"]] == [
        tokenizer.decode(tokenizer(record["prompt"]).input_ids, skip_special_tokens=True)
        for record in records
    ]


def test_hidden_state_pairs_pull_the_students_layers_to_the_teachers(lm_task, tmp_path):
    job = lm_job(lm_task[0], width=0.5, alpha=0.5, beta=0.5, features=FEATURES, alone_reference=True)
    result, reporter = distill(job, lm_task, tmp_path / "features")

    feature_loss = series(reporter, "feature_loss")
    assert len(feature_loss) == EPOCHS and feature_loss[-1] < feature_loss[0]
    assert not series(reporter, "alone_feature_loss")  # the reference learns from the text alone
    assert any("distillation.features reads the teacher's hidden states" in m for _l, m in reporter.events)
    featureless, _ = distill(lm_job(lm_task[0], width=0.5, alpha=0.5, beta=0.5), lm_task, tmp_path / "plain")
    assert student_weights(result).keys() == student_weights(featureless).keys()  # no projection exported


def test_the_feature_losses_leave_padding_out():
    outputs = {"layer": torch.randn(2, 5, 3)}
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    tokens = token_layers(outputs, mask)["layer"]
    assert torch.equal(tokens, torch.cat([outputs["layer"][0, :3], outputs["layer"][1]]))


def test_a_numbered_output_a_decoder_has_not_is_refused_by_name(lm_task, tmp_path):
    features = [{"student": "hidden_states.1", "teacher": "attentions.0"}]
    with pytest.raises(
        JobFailed, match="has no attentions.0: its numbered outputs are hidden_states.0 to"
    ) as no:
        distill(lm_job(lm_task[0], features=features), lm_task, tmp_path)
    assert no.value.code == "unknown_layer"


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_each_divergence_falls_as_the_student_learns_a_fixed_batch(divergence):
    torch.manual_seed(0)
    student = build_hf_model(lm_spec("llama", num_hidden_layers=1))
    ids = lm_token_ids(count=4)
    teacher = TeacherLogits(torch.randn(ids.numel(), LM_VOCAB) * 3)
    labels = ids.roll(-1, dims=1).flatten()
    config = DistillationConfig(alpha=1.0, beta=0.0, divergence=divergence, jsd_beta=0.3)
    objective = TokenObjective(config)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    losses = []
    for _step in range(30):
        hidden = student(ids).flatten(0, 1)
        terms = objective(hidden, LMHead.of(student.lm_head()), labels, teacher, temperature=2.0)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(terms["soft_loss"].item())
    assert math.isfinite(losses[-1]) and losses[-1] < 0.5 * losses[0]


REFUSED = {
    "a classifier's soft loss": ({"distillation": {"soft_loss": "dkd"}}, "distillation.soft_loss"),
    "mutual learning": ({"distillation": {"method": "mutual"}}, "distillation.method"),
    "the auto search": ({"distillation": {"temperature": "auto"}}, "distillation.temperature"),
    "an int8 program": ({"export": ["onnx", "int8"]}, "export"),
}


@pytest.mark.parametrize("changes, field", REFUSED.values(), ids=REFUSED.keys())
def test_what_a_language_model_cannot_ask_for_is_refused_by_its_field(tmp_path, changes, field):
    job = lm_job(lm_folder(tmp_path / "teacher"))
    fields = job.model_dump()
    for section, values in changes.items():
        fields[section] = fields[section] | values if isinstance(values, dict) else values
    with pytest.raises(JobFailed) as refused:
        check_job(EngineJob.model_validate(fields))
    assert refused.value.code == "unsupported_combination" and refused.value.param == field


def test_a_language_model_teaches_only_a_language_model(tmp_path):
    job = lm_job(lm_folder(tmp_path / "teacher"))
    bert = HFSpec(
        config={"model_type": "bert", "vocab_size": LM_VOCAB}, num_classes=2, max_length=LM_MAX_LENGTH
    )
    with pytest.raises(JobFailed, match="a language model teaches a language model") as refused:
        check_job(job.model_copy(update={"student_architecture": bert}))
    assert refused.value.param == "student.architecture"


def test_the_text_options_are_refused_for_a_classifier():
    job = EngineJob.model_validate(
        {
            "teachers": [{"format": "pt2"}],
            "student_architecture": {"family": "mlp", "input_shape": [4], "num_classes": 2},
            "text": {"truncation": "left"},
        }
    )
    with pytest.raises(JobFailed, match="remove dataset.truncation") as refused:
        check_job(job)
    assert refused.value.param == "dataset.truncation"
