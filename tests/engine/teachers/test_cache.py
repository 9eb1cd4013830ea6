"""The teacher-output cache: the same student as a job whose teachers run on every batch, the outputs of a
job kept for the next, keys that change with what the outputs depend on, and the jobs it must not serve."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.export import Dim

from engine.data.arrays import ArrayDataset
from engine.models.registry import build_model
from engine.pipeline import JobFiles, run_distillation
from engine.plan.specs import MLPSpec
from engine.teachers.cache import entry_key
from engine.teachers.cache_tables import MANIFEST
from tests.engine.factories import FEATURES, NUM_CLASSES, TEACHER_SPEC, FolderCacheStore, RecordingReporter

STEPS = 4 * 17  # 4 epochs of 540 training samples in batches of 32
CLOCKED = {
    "latency_ms",
    "speedup",
    "latency_device",
    "teacher_cache",
    "peak_memory",
}  # measured, or about the cache


def run(job, teacher_paths, train_path, out_dir, store=None):
    reporter = RecordingReporter()
    result = run_distillation(
        job, JobFiles(teacher_paths, train_path), out_dir, reporter, teacher_cache=store
    )
    return result, reporter


def unclocked(metrics: dict) -> dict:
    return {k: unclocked(v) if isinstance(v, dict) else v for k, v in metrics.items() if k not in CLOCKED}


def assert_same_student(one, other):
    weights = [load_file(result.artifacts["student.safetensors"]) for result in (one, other)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert one.series == other.series
    assert unclocked(one.metrics) == unclocked(other.metrics)


def without_cache(job):
    return job.model_copy(
        update={"distillation": job.distillation.model_copy(update={"teacher_cache": "off"})}
    )


@pytest.fixture(scope="module")
def other_teacher(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("other") / "teacher.safetensors"
    save_file(build_model(TEACHER_SPEC).state_dict(), path)
    return path


TWO_TEACHERS = [{"format": "safetensors", "architecture": TEACHER_SPEC, "weight": w} for w in (3.0, 1.0)]
FEATURE_PAIR = [{"teacher": "hidden.1", "student": "hidden.0"}]
JOBS = {
    "plain KD": {},
    "feature pairs": {"distillation": {"features": FEATURE_PAIR}},
    "two teachers, mean": {"teachers": TWO_TEACHERS},
    "two teachers drawn at random, a feature pair on the second": {
        "teachers": TWO_TEACHERS,
        "distillation": {"ensemble": "random", "features": [FEATURE_PAIR[0] | {"teacher_index": 1}]},
    },
    "mutual learning": {"distillation": {"method": "mutual"}},
    "born-again": {"distillation": {"method": "born_again", "generations": 2}, "training": {"epochs": 2}},
    "auto T": {"distillation": {"temperature": "auto", "search": {"temperatures": [1.0, 4.0]}}},
}


@pytest.mark.parametrize("overrides", JOBS.values(), ids=JOBS.keys())
def test_the_cache_gives_the_very_student_the_teachers_would(
    make_job, blob_task, other_teacher, tmp_path, overrides
):
    job = make_job(**overrides)
    teachers = [blob_task.teacher_path, other_teacher][: len(job.teachers)]
    cached, reporter = run(job, teachers, blob_task.train_path, tmp_path / "cached")
    uncached, _ = run(without_cache(job), teachers, blob_task.train_path, tmp_path / "uncached")
    assert_same_student(cached, uncached)
    assert cached.metrics["teacher_cache"]["status"] == "miss"
    assert uncached.metrics["teacher_cache"] == {
        "status": "off",
        "reason": "distillation.teacher_cache is off",
    }
    messages = [message for _, message in reporter.events]
    assert any(m.startswith("Teacher outputs over the 540 training samples: computed once") for m in messages)


def test_a_later_job_reads_what_an_earlier_one_kept_and_runs_no_teacher_pass(make_job, blob_task, tmp_path):
    store = FolderCacheStore(tmp_path / "store")
    job = make_job(distillation={"features": FEATURE_PAIR})
    first, _ = run(job, [blob_task.teacher_path], blob_task.train_path, tmp_path / "first", store)
    assert len(store.saved) == 2  # the training and the validation set's tables
    assert first.metrics["teacher_cache"]["status"] == "miss"

    second, reporter = run(job, [blob_task.teacher_path], blob_task.train_path, tmp_path / "second", store)
    assert_same_student(first, second)
    cache = second.metrics["teacher_cache"]
    assert cache["status"] == "hit" and cache["entries"] == 2 and len(store.saved) == 2
    assert cache["bytes"] == first.metrics["teacher_cache"]["bytes"] == 600 * (NUM_CLASSES + 64) * 4
    assert reporter.stop_checks == STEPS  # no pass of the teachers to check for a stop in
    messages = [message for _, message in reporter.events]
    assert any(
        m.startswith("Teacher outputs over the 540 training samples: read from the cache") for m in messages
    )


def test_a_torn_table_in_the_store_is_computed_again(make_job, blob_task, tmp_path):
    store = FolderCacheStore(tmp_path / "store")
    job = make_job(training={"epochs": 1})
    first, _ = run(job, [blob_task.teacher_path], blob_task.train_path, tmp_path / "first", store)
    for key in store.saved:
        logits = store.folder / key / "logits.bin"
        logits.write_bytes(logits.read_bytes()[:100])
    second, reporter = run(job, [blob_task.teacher_path], blob_task.train_path, tmp_path / "second", store)
    assert_same_student(first, second)
    assert second.metrics["teacher_cache"]["status"] == "miss"
    warnings = [message for level, message in reporter.events if level == "warning"]
    assert len(warnings) == 2 and all("could not be read" in w for w in warnings)


def test_half_precision_features_take_half_the_room_and_still_teach(make_job, blob_task, tmp_path):
    job = make_job(distillation={"features": FEATURE_PAIR, "teacher_cache_precision": "float16"})
    result, _ = run(job, [blob_task.teacher_path], blob_task.train_path, tmp_path)
    assert result.metrics["teacher_cache"]["bytes"] == 600 * (NUM_CLASSES * 4 + 64 * 2)
    assert result.metrics["student"]["accuracy"] > 0.9


def test_augmented_data_bypasses_the_cache_and_says_why(make_job, tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 1, 2, 4)).astype(np.float32)
    np.savez(tmp_path / "images.npz", x=x, y=np.arange(64) % NUM_CLASSES)
    spec = MLPSpec(input_shape=[1, 2, 4], num_classes=NUM_CLASSES, hidden_sizes=[8])
    save_file(build_model(spec).state_dict(), tmp_path / "teacher.safetensors")
    job = make_job(teacher_architecture=spec, training={"augmentation": {"shift": 1}, "epochs": 1})
    result, reporter = run(job, [tmp_path / "teacher.safetensors"], tmp_path / "images.npz", tmp_path / "out")
    reason = "training.augmentation changes the teachers' inputs at every step"
    assert result.metrics["teacher_cache"] == {"status": "bypassed", "reason": reason}
    assert f"Teacher outputs are not cached ({reason}): the teachers run on every batch." in [
        message for _, message in reporter.events
    ]


def test_a_teacher_with_dropout_left_on_bypasses_the_cache(make_job, blob_task, tmp_path):
    spec = MLPSpec(input_shape=[FEATURES], num_classes=NUM_CLASSES, hidden_sizes=[64], dropout=0.5)
    model = build_model(spec).train()  # exported in training mode: its dropout stays on
    program = torch.export.export(
        model, (torch.randn(2, FEATURES),), dynamic_shapes=({0: Dim("batch", min=1)},)
    )
    torch.export.save(program, tmp_path / "teacher.pt2")
    job = make_job(teacher_format="pt2", teacher_architecture=None, training={"epochs": 1})
    result, _ = run(job, [tmp_path / "teacher.pt2"], blob_task.train_path, tmp_path / "out")
    assert result.metrics["teacher_cache"]["status"] == "bypassed"
    assert "teacher 0 gives different outputs for the same batch" in result.metrics["teacher_cache"]["reason"]


def key_of(make_job, files=None, layers=(), part="train", dataset=None, arithmetic="cpu:fp32", **overrides):
    job = make_job(**overrides)
    files = files or JobFiles([__file__], __file__)
    dataset = dataset or ArrayDataset(torch.zeros(10, FEATURES), None)
    return entry_key(
        job,
        files,
        lambda path: f"sha-of-{path}",
        teacher=0,
        part=part,
        inputs=dataset.x,
        layers=list(layers),
        arithmetic=arithmetic,
    )


def test_the_key_changes_with_what_the_outputs_depend_on_and_nothing_else(make_job):
    base = key_of(make_job)
    depends = {
        "another teacher file": key_of(make_job, files=JobFiles(["other.safetensors"], __file__)),
        "another dataset file": key_of(make_job, files=JobFiles([__file__], "other.npz")),
        "a validation file": key_of(make_job, files=JobFiles([__file__], __file__, "validation.npz")),
        "another hold-out seed": key_of(make_job, training={"seed": 1}),
        "another hold-out share": key_of(make_job, training={"validation_fraction": 0.2}),
        "the validation part": key_of(make_job, part="validation"),
        "a tapped layer": key_of(make_job, layers=["hidden.1"]),
        "bfloat16 training steps": key_of(make_job, arithmetic="cpu:bf16"),
        "a GPU": key_of(make_job, arithmetic="cuda:fp32"),
        "a tokenizer": key_of(make_job, files=JobFiles([__file__], __file__, tokenizer="tokenizer.json")),
        "another sample shape": key_of(make_job, dataset=ArrayDataset(torch.zeros(10, 2, 4), None)),
        "another architecture": key_of(
            make_job, teacher_architecture=TEACHER_SPEC.model_copy(update={"hidden_sizes": [64]})
        ),
    }
    assert len(set(depends.values()) | {base}) == len(depends) + 1, json.dumps(depends, indent=1)
    same = {
        "the learning rate": key_of(make_job, training={"learning_rate": 0.5}),
        "the temperature": key_of(make_job, distillation={"temperature": 9.0}),
        "the student": key_of(make_job, student_architecture=TEACHER_SPEC),
        "the precision, with no layer tapped": key_of(
            make_job, distillation={"teacher_cache_precision": "float16"}
        ),
    }
    assert set(same.values()) == {base}
    assert key_of(
        make_job, layers=["hidden.1"], distillation={"teacher_cache_precision": "float16"}
    ) != key_of(make_job, layers=["hidden.1"])


def test_a_table_holds_what_its_manifest_says(make_job, blob_task, tmp_path):
    store = FolderCacheStore(tmp_path / "store")
    run(
        make_job(training={"epochs": 1}),
        [blob_task.teacher_path],
        blob_task.train_path,
        tmp_path / "out",
        store,
    )
    manifests = [json.loads((store.folder / key / MANIFEST).read_text()) for key in store.saved]
    assert sorted(m["samples"] for m in manifests) == [60, 540]
    assert all(
        m["tensors"]["logits"]
        == {"file": "logits.bin", "dtype": "torch.float32", "sample_shape": [NUM_CLASSES]}
        for m in manifests
    )
