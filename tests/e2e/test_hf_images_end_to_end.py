"""A Hugging Face image classifier in, a smaller one out, over HTTP as a user runs it: a fine-tuned ViT's
`save_pretrained` folder uploaded as a zip, images as Parquet of PNG files with label names, a MobileNetV2
student given as a transformers config (`student.hf`); the downloaded `student.hf.zip` loads with
`AutoModelForImageClassification`, names the teacher's labels and, in transformers' pipeline, scores on the
validation images what the job reported. The worker's log carries no transformers progress bar."""

import io
import zipfile

import pytest
from transformers import AutoModelForImageClassification, pipeline

from tests.engine.hf_factories import CONFIGS
from tests.hf_archives import folder_files, zip_archive
from tests.hf_image_factories import (
    COLOURS,
    coloured_images,
    pil_image,
    vit_teacher_folder,
    write_image_parquet,
)

pytestmark = pytest.mark.e2e


def test_a_vit_folder_in_a_mobilenet_folder_out(stack, tmp_path):
    pixels, labels = coloured_images(96, seed=0)
    validation_pixels, validation_labels = coloured_images(30, seed=1)
    archive = tmp_path / "vit.zip"
    archive.write_bytes(zip_archive(folder_files(vit_teacher_folder(tmp_path / "vit", pixels, labels))))
    teacher = stack.client.upload(archive, "teacher")
    assert (teacher["format"], teacher["model"]["task"], teacher["model"]["labels"]) == (
        "hf",
        "image",
        COLOURS,
    )
    train = write_image_parquet(tmp_path / "train.parquet", pixels, labels)
    validation = write_image_parquet(tmp_path / "validation.parquet", validation_pixels, validation_labels)
    request = {
        "teacher": {"file_id": teacher["id"]},
        "student": {"hf": {"model_type": "mobilenet_v2", **CONFIGS["mobilenet_v2"]}},
        "dataset": {
            "train_file_id": stack.client.upload(train, "dataset")["id"],
            "validation_file_id": stack.client.upload(validation, "dataset")["id"],
        },
        "distillation": {"temperature": 2.0, "alpha": 0.5, "beta": 0.5},
        "training": {"epochs": 2, "batch_size": 32, "learning_rate": 0.01},
        "export": [],
    }
    job = stack.client.wait_for_success(stack.client.submit(request)["id"], timeout=300)
    student = job["request"]["student"]["architecture"]
    assert (student["family"], student["config"]["model_type"], student["input_shape"]) == (
        "hf",
        "mobilenet_v2",
        [3, 8, 8],
    )
    metrics = job["metrics"]
    assert metrics["teacher"]["accuracy"] > 0.9

    folder = tmp_path / "student.hf"
    with zipfile.ZipFile(io.BytesIO(stack.client.artifact(job["id"], "student.hf.zip"))) as unpacked:
        unpacked.extractall(folder)
    model = AutoModelForImageClassification.from_pretrained(folder)
    assert model.config.model_type == "mobilenet_v2"
    assert model.config.id2label == dict(enumerate(COLOURS))
    classify = pipeline("image-classification", model=str(folder), top_k=1)
    predicted = [results[0]["label"] for results in classify([pil_image(p) for p in validation_pixels])]
    accuracy = sum(p == y for p, y in zip(predicted, validation_labels, strict=True)) / len(validation_labels)
    assert accuracy == pytest.approx(metrics["student"]["accuracy"], abs=1 / len(validation_labels))

    log = (stack.home / "worker.log").read_text()
    assert "Loading weights" not in log and "Writing model shards" not in log
