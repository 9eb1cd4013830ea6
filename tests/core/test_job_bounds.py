"""A job's memory bound from its specs: a LoRA student holds its frozen weights once, and only its adapters
have gradients and optimizer state."""

import pytest

from core.config import Settings
from core.errors import RequestError
from core.job_bounds import TeacherFile, check_bounds
from engine.plan.specs import EngineJob, LoraConfig
from tests.lm_model_factories import lm_spec

BILLION = 10**9
MODEL = lm_spec("llama").model_copy(update={"parameters": BILLION, "activation_floats": 1_000})


def lm_job(lora: LoraConfig | None) -> EngineJob:
    """A copy of a billion-parameter teacher learning from it, as itself or through adapters."""
    return EngineJob.model_validate(
        {
            "teachers": [{"format": "hf", "architecture": MODEL}],
            "student_architecture": MODEL,
            "student_init": "teacher",
            "student_lora": lora,
            "training": {"batch_size": 1, "optimizer": "adamw"},
        }
    )


def memory_check(job: EngineJob, limit: int) -> None:
    settings = Settings(max_job_memory_bytes=limit, max_model_parameters=2 * BILLION)
    check_bounds(job, settings, teachers=[TeacherFile("teacher", 0)], train_samples=None, dataset_bytes=0)


def test_a_lora_student_needs_its_frozen_weights_once_and_its_adapters_four_times():
    adapters = LoraConfig(parameters=BILLION // 1000)
    teacher, lora_student = 4 * BILLION, 4 * (BILLION + 4 * BILLION // 1000)  # bytes, besides activations
    limit = teacher + lora_student + 100_000
    memory_check(lm_job(adapters), limit)
    with pytest.raises(RequestError) as refused:  # the whole model trained needs 16 GB for itself
        memory_check(lm_job(None), limit)
    assert refused.value.code == "memory_exceeded"
    with pytest.raises(RequestError):
        memory_check(lm_job(adapters), limit - 100_000)
