"""Fixtures: a trained teacher for a small blob-classification task, and jobs that distill it; a causal
language model's teacher folder and text."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine.models.registry import build_model
from engine.plan.specs import EngineJob
from tests.lm_factories import write_jsonl
from tests.lm_model_factories import TEXTS, lm_folder

from .factories import STUDENT_SPEC, TEACHER_SPEC, gaussian_blobs, train_classifier


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """The models here are tiny: extra threads only add overhead, and contention when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class BlobTask:
    """A trained MLP teacher for the blobs and the files a job reads."""

    teacher: torch.nn.Module
    teacher_path: Path
    train_path: Path
    unlabeled_path: Path


@pytest.fixture(scope="session")
def blob_task(tmp_path_factory: pytest.TempPathFactory) -> BlobTask:
    directory = tmp_path_factory.mktemp("blobs")
    x, y = gaussian_blobs(600)
    torch.manual_seed(0)
    teacher = train_classifier(build_model(TEACHER_SPEC), x, y)
    save_file(teacher.state_dict(), directory / "teacher.safetensors")
    np.savez(directory / "train.npz", x=x, y=y)
    np.savez(directory / "unlabeled.npz", x=x)
    return BlobTask(
        teacher=teacher,
        teacher_path=directory / "teacher.safetensors",
        train_path=directory / "train.npz",
        unlabeled_path=directory / "unlabeled.npz",
    )


@pytest.fixture(scope="session")
def make_job():
    """An EngineJob for the blob task: a 4,996-parameter teacher into a 212-parameter student."""

    def make(teacher_format="safetensors", teacher_architecture=TEACHER_SPEC, **overrides) -> EngineJob:
        fields = {
            "teachers": [{"format": teacher_format, "architecture": teacher_architecture}],
            "student_architecture": STUDENT_SPEC,
            "distillation": {"temperature": 2.0, "alpha": 0.5, "beta": 0.5},
            "training": {"epochs": 4, "batch_size": 32, "learning_rate": 1e-2, "device": "cpu"},
        }
        for name in ("distillation", "training"):
            fields[name] = fields[name] | overrides.pop(name, {})
        return EngineJob.model_validate(fields | overrides)

    return make


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm_task(request, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny causal language model's teacher folder of each model type, and a file of its text."""
    folder = tmp_path_factory.mktemp(request.param)
    teacher = lm_folder(folder / "teacher", request.param)
    train = write_jsonl(folder / "train.jsonl", [{"text": text} for text in TEXTS * 2])
    return teacher, train
