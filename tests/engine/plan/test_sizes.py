"""A job's figures from its specs alone: parameters exactly as the built models have them, activations
from above, epochs across trials, generations and peers; and none of it builds a tensor."""

import pytest

from engine.models.registry import build_model, count_parameters
from engine.plan.sizes import activation_floats, model_epochs, parameter_count, planned_epochs
from engine.plan.specs import CNNSpec, EngineJob, MLPSpec, TransformerSpec

SPECS = [
    MLPSpec(input_shape=[8], num_classes=4),
    MLPSpec(input_shape=[3, 4], num_classes=5, hidden_sizes=[16, 7, 9]),
    CNNSpec(input_shape=[3, 9, 7], num_classes=10),
    CNNSpec(input_shape=[1, 8, 8], num_classes=3, widths=[4, 4, 8], blocks_per_stage=3),
    CNNSpec(input_shape=[2, 5, 5], num_classes=2, widths=[6], blocks_per_stage=2),
    TransformerSpec(
        vocab_size=50,
        max_length=12,
        num_classes=3,
        hidden_size=16,
        num_layers=3,
        num_heads=4,
        intermediate_size=24,
    ),  # fmt: skip
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.family)
def test_parameters_are_those_of_the_built_model(spec):
    assert parameter_count(spec) == count_parameters(build_model(spec))


def test_a_model_too_big_to_build_is_counted_at_once():
    huge = MLPSpec(input_shape=[4], num_classes=100_000, hidden_sizes=[65_536])
    assert parameter_count(huge) == 4 * 65_536 + 65_536 + 65_536 * 100_000 + 100_000  # 6.5e9
    assert activation_floats(huge) == 4 + 3 * 65_536 + 100_000


def job(**fields) -> EngineJob:
    base = {"teachers": [{"format": "pt2"}], "student_architecture": SPECS[0], "training": {"epochs": 7}}
    return EngineJob.model_validate(base | fields)


@pytest.mark.parametrize(
    ("distillation", "planned", "computed"),
    [
        ({}, 7, 7),
        ({"temperature": "auto", "alpha": "auto"}, 7 + 7, 14),  # 8 of the 10 combinations, an epoch each
        ({"temperature": "auto", "search": {"trial_epochs": 3}}, 3 * 3 - 3 + 7, 13),
        ({"temperature": "auto", "search": {"budget_epochs": 20}}, 5 * 1 + 2 * 7 - 7 + 7, 19),  # two rungs
        ({"method": "born_again", "generations": 4}, 28, 28),
        ({"method": "mutual"}, 7, 14),  # one peer of the student's own by default
        ({"method": "mutual", "peers": [SPECS[1].model_dump()] * 3}, 7, 28),
    ],
    ids=[
        "plain",
        "auto grid",
        "longer trials",
        "a larger budget",
        "generations",
        "a pair",
        "a cohort of four",
    ],
)
def test_epochs_count_every_run_and_every_model(distillation, planned, computed):
    assert planned_epochs(job(distillation=distillation)) == planned
    assert model_epochs(job(distillation=distillation)) == computed
