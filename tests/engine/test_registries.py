"""Each registry holds exactly the choices its spec field allows: a choice added to a spec without an
implementation, or an implementation no request can choose, fails here."""

from typing import get_args

import pytest
from pydantic import BaseModel

from engine.losses.functions import FEATURE_LOSSES, RESPONSE_LOSSES
from engine.models.registry import MODEL_FAMILIES
from engine.plan.specs import ArchitectureSpec, DistillationConfig, FeaturePair, SoftLoss
from engine.train.methods import METHODS


def literal_choices(spec: type[BaseModel], field: str) -> set[str]:
    return set(get_args(spec.model_fields[field].annotation))


def architecture_families() -> set[str]:
    union, _discriminator = get_args(ArchitectureSpec)
    return {family for spec in get_args(union) for family in literal_choices(spec, "family")}


@pytest.mark.parametrize(
    ("registry", "choices"),
    [
        (RESPONSE_LOSSES, set(get_args(SoftLoss))),
        (FEATURE_LOSSES, literal_choices(FeaturePair, "loss")),
        (METHODS, literal_choices(DistillationConfig, "method")),
        (MODEL_FAMILIES, architecture_families()),
    ],
    ids=["response losses", "feature losses", "methods", "model families"],
)
def test_a_registry_implements_exactly_the_choices_of_its_spec(registry, choices):
    assert set(registry) == choices
