"""A causal language model distilled on generated text: sequence-level KD on the teacher's completions (the
artifact a later job trains on as its dataset) and on-policy distillation on the student's own samples."""

import pytest
from pydantic import ValidationError

from engine.plan.errors import JobFailed
from engine.plan.rules import check_job
from engine.plan.specs import DistillationConfig, EngineJob
from tests.engine.test_lm_distillation import lm_job
from tests.lm_model_factories import LM_MAX_LENGTH, lm_folder

CLASSIFIER = {
    "teachers": [{"format": "pt2"}],
    "student_architecture": {"family": "mlp", "input_shape": [4], "num_classes": 2},
}
REFUSED = {
    "sequence-level KD of a classifier": (CLASSIFIER, {"sequence_level": {}}, "distillation.sequence_level"),
    "on-policy distillation of a classifier": (CLASSIFIER, {"on_policy": {}}, "distillation.on_policy"),
    "a text prompt that fills the block": (
        None,
        {"sequence_level": {"prompt_tokens": LM_MAX_LENGTH - 1}},
        "distillation.sequence_level.prompt_tokens",
    ),
    "on-policy steps without the divergence": (
        None,
        {"on_policy": {}, "alpha": 0.0, "beta": 1.0},
        "distillation.alpha",
    ),
}


@pytest.mark.parametrize("job, distillation, field", REFUSED.values(), ids=REFUSED.keys())
def test_what_generation_cannot_do_is_refused_by_its_field(tmp_path, job, distillation, field):
    if job is None:
        job = lm_job(lm_folder(tmp_path / "teacher")).model_dump()
    job = EngineJob.model_validate(job | {"distillation": job.get("distillation", {}) | distillation})
    with pytest.raises(JobFailed) as refused:
        check_job(job)
    assert refused.value.code == "unsupported_combination" and refused.value.param == field


def test_several_greedy_completions_of_a_prompt_are_refused():
    with pytest.raises(ValidationError, match="the same completion each time"):
        DistillationConfig(sequence_level={"temperature": 0.0, "samples_per_prompt": 2})
