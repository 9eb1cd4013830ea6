"""Each distillation method does what it exists for, on the blob task."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine.data.augment import random_shift
from engine.models.registry import build_model
from engine.pipeline import JobFiles, run_distillation
from engine.plan.design import derive_spec
from engine.plan.errors import JobFailed
from engine.plan.specs import CNNSpec, MLPSpec
from tests.engine.factories import TEACHER_SPEC, RecordingReporter, series


def run(job, teacher_paths, train_path, out_dir):
    reporter = RecordingReporter()
    result = run_distillation(job, JobFiles(teacher_paths, train_path), out_dir, reporter)
    return result, reporter


@pytest.mark.parametrize(
    "distillation",
    [
        *({"soft_loss": name} for name in ("kl", "ce", "mse", "dkd", "dist")),
        {"soft_loss": "kl", "logit_standardization": True},
    ],
    ids=["kl", "ce", "mse", "dkd", "dist", "standardized kl"],
)
def test_every_soft_loss_trains_a_good_student(make_job, blob_task, tmp_path, distillation):
    job = make_job(distillation=distillation)
    result, reporter = run(job, [blob_task.teacher_path], blob_task.train_path, tmp_path)
    assert result.metrics["student"]["accuracy"] > 0.9
    assert series(reporter, "soft_loss")[-1] < series(reporter, "soft_loss")[0]


def test_temperature_schedule_is_reported_per_epoch(make_job, blob_task, tmp_path):
    job = make_job(distillation={"temperature": 8.0, "final_temperature": 1.0})
    _, reporter = run(job, [blob_task.teacher_path], blob_task.train_path, tmp_path)
    temperatures = series(reporter, "temperature")
    assert len(temperatures) == 4 and temperatures[-1] == pytest.approx(1.0)
    assert temperatures == sorted(temperatures, reverse=True)


def test_feature_pairs_learn_a_projection_and_the_feature_loss_falls(make_job, blob_task, tmp_path):
    # student hidden.0 has 16 units, teacher hidden.1 has 64: a learned 16 -> 64 projection bridges them
    pairs = [{"teacher": "hidden.1", "student": "hidden.0", "weight": 1.0, "loss": "mse"}]
    job = make_job(distillation={"features": pairs}, training={"epochs": 6})
    result, reporter = run(job, [blob_task.teacher_path], blob_task.train_path, tmp_path)
    feature_losses = series(reporter, "feature_loss")
    assert len(feature_losses) == 6 and feature_losses[-1] < 0.8 * feature_losses[0]
    assert result.metrics["student"]["accuracy"] > 0.9
    exported = torch.export.load(result.artifacts["student.pt2"]).module()
    assert sum(p.numel() for p in exported.parameters()) == result.metrics["student"]["parameters"]


def test_feature_pairs_alone_can_train_on_unlabeled_data(make_job, blob_task, tmp_path):
    pairs = [{"teacher": "head", "student": "head", "loss": "cosine"}]
    job = make_job(distillation={"alpha": 0.0, "beta": 0.0, "features": pairs})
    result, reporter = run(job, [blob_task.teacher_path], blob_task.unlabeled_path, tmp_path)
    assert series(reporter, "feature_loss")[-1] < series(reporter, "feature_loss")[0]
    assert result.metrics["agreement"] > 0.8


@pytest.mark.parametrize(
    ("pair", "code", "phrase"),
    [
        ({"teacher": "hidden.7", "student": "hidden.0"}, "unknown_layer", "hidden.1"),
        ({"teacher": "hidden.0", "student": "nope"}, "unknown_layer", "head"),
        ({"teacher": "hidden.0", "student": "hidden.0", "teacher_index": 1}, "unknown_teacher", "1 teacher"),
    ],
)
def test_bad_feature_pairs_fail_before_training(make_job, blob_task, tmp_path, pair, code, phrase):
    job = make_job(distillation={"features": [pair]})
    with pytest.raises(JobFailed) as raised:
        run(job, [blob_task.teacher_path], blob_task.train_path, tmp_path)
    assert raised.value.code == code and phrase in raised.value.message


def test_feature_pair_between_a_map_and_a_vector_is_refused(make_job, tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "images.npz", x=x, y=np.arange(40) % 4)
    teacher_spec = CNNSpec(input_shape=[1, 8, 8], num_classes=4, widths=[4, 8])
    save_file(build_model(teacher_spec).state_dict(), tmp_path / "teacher.safetensors")
    student = {"family": "mlp", "input_shape": [1, 8, 8], "num_classes": 4, "hidden_sizes": [16]}
    job = make_job(
        teacher_architecture=teacher_spec,
        student_architecture=student,
        distillation={"features": [{"teacher": "stages.1", "student": "hidden.0"}]},
    )
    with pytest.raises(JobFailed) as raised:
        run(job, [tmp_path / "teacher.safetensors"], tmp_path / "images.npz", tmp_path / "out")
    assert raised.value.code == "incompatible_features" and "[8, 4, 4]" in raised.value.message


def test_cnn_feature_maps_are_projected_with_a_1x1_convolution(make_job, tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    x = rng.normal(0, 0.3, (200, 1, 8, 8)).astype(np.float32)
    x[np.arange(200), 0, y * 2, :] += 2.0
    np.savez(tmp_path / "images.npz", x=x, y=y)
    teacher_spec = CNNSpec(input_shape=[1, 8, 8], num_classes=4, widths=[8, 16])
    save_file(build_model(teacher_spec).state_dict(), tmp_path / "teacher.safetensors")
    student_spec = {"family": "cnn", "input_shape": [1, 8, 8], "num_classes": 4, "widths": [4, 4]}
    job = make_job(
        teacher_architecture=teacher_spec,
        student_architecture=student_spec,
        distillation={"features": [{"teacher": "stages.1", "student": "stages.1"}]},
        training={"epochs": 3},
    )
    _, reporter = run(job, [tmp_path / "teacher.safetensors"], tmp_path / "images.npz", tmp_path / "out")
    assert series(reporter, "feature_loss")[-1] < series(reporter, "feature_loss")[0]


@pytest.fixture(scope="module")
def second_teacher(blob_task, tmp_path_factory):
    """An untrained teacher: mixing it in visibly changes the ensemble's targets."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("second") / "teacher.safetensors"
    save_file(build_model(TEACHER_SPEC).state_dict(), path)
    return path


@pytest.mark.parametrize("ensemble", ["mean", "random"])
def test_two_teachers_are_counted_and_distilled(make_job, blob_task, second_teacher, tmp_path, ensemble):
    teachers = [{"format": "safetensors", "architecture": TEACHER_SPEC, "weight": w} for w in (3.0, 1.0)]
    job = make_job(teachers=teachers, distillation={"ensemble": ensemble})
    result, reporter = run(job, [blob_task.teacher_path, second_teacher], blob_task.train_path, tmp_path)
    single_teacher_parameters = sum(p.numel() for p in blob_task.teacher.parameters())
    assert result.metrics["teacher"]["parameters"] == 2 * single_teacher_parameters
    assert "Teacher 2 of 2 loaded" in " ".join(message for _, message in reporter.events)
    assert result.metrics["student"]["accuracy"] > 0.8  # the trained teacher carries 3/4 of the weight


def test_a_student_derived_at_full_size_and_initialised_from_the_teacher_starts_as_the_teacher(
    make_job, blob_task, tmp_path
):
    student_spec = derive_spec(TEACHER_SPEC, depth=1.0, width=1.0)
    job = make_job(
        student_architecture=student_spec, student_init="teacher", training={"learning_rate": 1e-9}
    )
    result, reporter = run(job, [blob_task.teacher_path], blob_task.train_path, tmp_path)
    assert result.metrics["agreement"] == 1.0
    assert result.metrics["student"]["accuracy"] == result.metrics["teacher"]["accuracy"]
    assert any("initialised from the teacher" in message for _, message in reporter.events)


def test_a_half_depth_student_takes_every_second_teacher_layer(make_job, blob_task, tmp_path):
    student_spec = derive_spec(TEACHER_SPEC, depth=0.5, width=1.0)  # 2 hidden layers -> 1
    job = make_job(student_architecture=student_spec, student_init="teacher", training={"epochs": 1})
    _, reporter = run(job, [blob_task.teacher_path], blob_task.train_path, tmp_path)
    assert any("teacher layers 0" in message for _, message in reporter.events)


def test_int8_export_is_smaller_and_measured(make_job, blob_task, tmp_path):
    student = {"family": "mlp", "input_shape": [8], "num_classes": 4, "hidden_sizes": [256, 256]}
    job = make_job(student_architecture=student, export=["int8"])
    result, _ = run(job, [blob_task.teacher_path], blob_task.train_path, tmp_path)
    int8 = result.metrics["int8"]
    assert int8["bytes"] < 0.5 * int8["float_bytes"]
    assert int8["agreement"] > 0.95 and abs(int8["accuracy"] - result.metrics["student"]["accuracy"]) < 0.05
    program = torch.export.load(result.artifacts["student.int8.pt2"]).module()
    assert program(torch.randn(3, 8)).shape == (3, 4)


def test_augmented_image_training_runs_and_flat_data_is_refused(make_job, tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "images.npz", x=x, y=np.arange(64) % 4)
    spec = {"family": "mlp", "input_shape": [1, 8, 8], "num_classes": 4, "hidden_sizes": [8]}
    save_file(build_model(MLPSpec(**spec)).state_dict(), tmp_path / "teacher.safetensors")
    augmentation = {"augmentation": {"shift": 2, "flip": True}, "epochs": 1}
    job = make_job(teacher_architecture=spec, student_architecture=spec, training=augmentation)
    result, _ = run(job, [tmp_path / "teacher.safetensors"], tmp_path / "images.npz", tmp_path / "out")
    assert "student.pt2" in result.artifacts

    np.savez(tmp_path / "flat.npz", x=x.reshape(64, 64), y=np.arange(64) % 4)
    flat_job = make_job(teacher_architecture=spec, student_architecture=spec, training=augmentation)
    with pytest.raises(JobFailed) as raised:
        run(flat_job, [tmp_path / "teacher.safetensors"], tmp_path / "flat.npz", tmp_path / "out2")
    assert raised.value.code == "augmentation_unsupported"


def test_random_shift_moves_each_image_within_the_bound_and_fills_zeros():
    images = torch.arange(1, 26, dtype=torch.float32).view(1, 1, 5, 5).repeat(50, 1, 1, 1)
    shifted = random_shift(images, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    for image in shifted[:, 0]:
        kept = image[image > 0]
        assert 9 <= len(kept) <= 25  # a 2-pixel shift keeps at least a 3x3 block
        rows, cols = (image > 0).nonzero(as_tuple=True)
        assert torch.equal(
            image[rows.min(), cols.min() :][: cols.max() - cols.min() + 1].diff(),
            torch.ones(cols.max() - cols.min()),
        )
    assert len({tuple(image.flatten().tolist()) for image in shifted[:, 0]}) > 5  # shifts differ per image


def test_mutual_students_agree_more_over_time_and_all_are_reported(make_job, blob_task, tmp_path):
    peer = {"family": "mlp", "input_shape": [8], "num_classes": 4, "hidden_sizes": [32]}
    distillation = {"method": "mutual", "peers": [peer], "alpha": 0.0, "beta": 1.0}
    job = make_job(distillation=distillation, training={"learning_rate": 1e-3})  # slow: agreement grows
    result, reporter = run(job, [blob_task.teacher_path], blob_task.train_path, tmp_path)
    agreement = series(reporter, "mutual_agreement")
    assert len(agreement) == 4 and agreement[-1] > agreement[0]
    assert series(reporter, "mutual_loss")[-1] < series(reporter, "mutual_loss")[0]
    assert len(series(reporter, "peer1_validation_accuracy")) == 4
    students = result.metrics["students"]
    assert [s["name"] for s in students] == ["student", "peer1"]
    assert sum(s["exported"] for s in students) == 1
    exported = next(s for s in students if s["exported"])
    assert (
        exported["accuracy"] == max(s["accuracy"] for s in students) == result.metrics["student"]["accuracy"]
    )
    assert exported["parameters"] == result.metrics["student"]["parameters"]


def test_a_peer_that_cannot_read_the_data_fails_before_training(make_job, blob_task, tmp_path):
    peer = {"family": "cnn", "input_shape": [2, 2, 2], "num_classes": 4}  # the blobs are flat [8]
    job = make_job(distillation={"method": "mutual", "peers": [peer]})
    reporter = RecordingReporter()
    with pytest.raises(JobFailed) as raised:
        run_distillation(job, JobFiles([blob_task.teacher_path], blob_task.train_path), tmp_path, reporter)
    assert raised.value.code == "incompatible_shapes" and "distillation.peers.0" in raised.value.message
    assert reporter.phases == ["validating"]


def test_peers_of_their_own_shape_start_from_the_teacher_too(make_job, blob_task, tmp_path):
    """Each peer is initialised from the teacher by its own architecture (they used the student's)."""
    student = MLPSpec(input_shape=[8], num_classes=4, hidden_sizes=[64])
    peer = MLPSpec(input_shape=[8], num_classes=4, hidden_sizes=[32, 16])
    job = make_job(
        student_architecture=student,
        student_init="teacher",
        distillation={"method": "mutual", "peers": [peer.model_dump()]},
        training={"epochs": 1},
    )
    result, reporter = run(job, [blob_task.teacher_path], blob_task.train_path, tmp_path)
    initialised = [message for _, message in reporter.events if "initialised from the teacher" in message]
    assert len(initialised) == 2 and "teacher layers 0, 1" in initialised[1]
    assert [s["name"] for s in result.metrics["students"]] == ["student", "peer1"]


def test_born_again_generations_each_teach_the_next_and_are_all_reported(make_job, blob_task, tmp_path):
    job = make_job(distillation={"method": "born_again", "generations": 3}, training={"epochs": 2})
    result, reporter = run(job, [blob_task.teacher_path], blob_task.train_path, tmp_path)
    generations = result.metrics["generations"]
    assert [g["name"] for g in generations] == ["generation1", "generation2", "generation3"]
    assert sum(g["exported"] for g in generations) == 1
    events = [message for _, message in reporter.events]
    assert "Generation 3 of 3, taught by generation 2" in events
    assert len(series(reporter, "loss")) == 2 and len(series(reporter, "generation3_loss")) == 2
    assert reporter.progress_calls[-1][2] == reporter.progress_calls[-1][3]  # progress spans all generations
    assert reporter.progress_calls[-1][1] == 6


def test_auto_temperature_and_alpha_pick_a_grid_value_and_record_the_trials(make_job, blob_task, tmp_path):
    search = {"temperatures": [1.0, 4.0], "alphas": [0.2, 0.8], "trial_epochs": 1}
    job = make_job(distillation={"temperature": "auto", "alpha": "auto", "search": search})
    result, reporter = run(job, [blob_task.teacher_path], blob_task.train_path, tmp_path)
    chosen = result.metrics["search"]
    assert len(chosen["trials"]) == 4
    assert (chosen["temperature"], chosen["alpha"]) in {(t, a) for t in (1.0, 4.0) for a in (0.2, 0.8)}
    best = max(chosen["trials"], key=lambda t: t["validation_accuracy"])
    assert (best["temperature"], best["alpha"]) == (chosen["temperature"], chosen["alpha"])
    assert len(series(reporter, "trial3_validation_accuracy")) == 1
    assert any(message.startswith("Chosen by 4 trials") for _, message in reporter.events)
    assert len(series(reporter, "loss")) == 3  # then the chosen trial goes on to the run's 4 epochs


def test_auto_needs_validation_labels(make_job, blob_task, tmp_path):
    job = make_job(distillation={"temperature": "auto"})
    with pytest.raises(JobFailed) as raised:
        run(job, [blob_task.teacher_path], blob_task.unlabeled_path, tmp_path)
    assert raised.value.code == "labels_required" and "auto" in raised.value.message
