"""Text distillation over HTTP: a transformer teacher, JSON Lines data and a `tokenizers` JSON file
uploaded as a user would, a TinyBERT job through the real worker, and the student run with plain
PyTorch on token ids."""

import io

import pytest
import torch

from tests.factories import accuracy, save_teacher
from tests.text_factories import (
    STUDENT_SPEC,
    TEACHER_SPEC,
    marked_sequences,
    train_text_teacher,
    word_tokenizer,
    write_jsonl,
)

pytestmark = pytest.mark.e2e


def test_tinybert_job_over_json_lines(stack, tmp_path):
    x, y = marked_sequences(384, seed=0)
    x_val, y_val = marked_sequences(128, seed=1)
    teacher = stack.client.upload(
        save_teacher(tmp_path / "teacher.safetensors", train_text_teacher(x, y)), "teacher"
    )
    train = stack.client.upload(write_jsonl(tmp_path / "train.jsonl", x, y), "dataset")
    validation = stack.client.upload(write_jsonl(tmp_path / "validation.jsonl", x_val, y_val), "dataset")
    word_tokenizer().save(str(tmp_path / "tokenizer.json"))
    tokenizer = stack.client.upload(tmp_path / "tokenizer.json", "tokenizer")
    assert (train["format"], tokenizer["format"]) == ("jsonl", "json")

    request = {
        "teacher": {"file_id": teacher["id"], "architecture": TEACHER_SPEC.model_dump()},
        "student": {"architecture": STUDENT_SPEC.model_dump()},
        "dataset": {
            "train_file_id": train["id"],
            "validation_file_id": validation["id"],
            "tokenizer_file_id": tokenizer["id"],
        },
        "distillation": {
            "temperature": 2.0,
            "alpha": 0.5,
            "beta": 0.5,
            "transformer": {"hidden_weight": 2.0},
        },
        "training": {"epochs": 4, "batch_size": 32, "learning_rate": 0.005},
    }
    created = stack.client.post("/v1/jobs", json=request)
    assert created.status_code == 201, created.text
    job = stack.client.wait_for_job(created.json()["id"])
    assert job["status"] == "succeeded", f"{job['error']}\n{stack.logs()}"
    assert job["metrics"]["teacher"]["accuracy"] > 0.95
    assert job["metrics"]["student"]["accuracy"] > 0.8  # chance is 0.5

    series = stack.client.get(f"/v1/jobs/{job['id']}/metrics").json()["data"]
    names = {point["name"] for point in series}
    assert {"embedding_loss", "hidden_loss", "attention_loss", "tinybert_loss", "soft_loss"} <= names
    hidden = [point["value"] for point in series if point["name"] == "hidden_loss"]
    assert len(hidden) == 4 and hidden[-1] < hidden[0]

    # The student runs without the service's code on int64 token ids, and measures as reported.
    download = stack.client.get(f"/v1/jobs/{job['id']}/artifacts/student.pt2")
    assert download.status_code == 200
    program = torch.export.load(io.BytesIO(download.content))
    with torch.no_grad():
        logits = program.module()(torch.from_numpy(x_val))
    assert accuracy(logits, y_val) == pytest.approx(job["metrics"]["student"]["accuracy"], abs=1e-6)
