"""The per-token divergences against their definitions written out in numpy, TRL's convention for the
generalized JSD's beta (its ends, its limits), and outcomes of probability 0."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.losses.token_divergences import (
    TOKEN_DIVERGENCES,
    forward_kl,
    generalized_jsd,
    reverse_kl,
)
from tests.engine.losses.token_factories import DIVERGENCES, reference_divergence


def log_probs(seed: int, rows: int = 6, outcomes: int = 11, scale: float = 2.0) -> torch.Tensor:
    logits = scale * torch.randn(
        rows, outcomes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    return F.log_softmax(logits, dim=-1)


TEACHER, STUDENT = log_probs(1), log_probs(2)


@pytest.mark.parametrize("name", DIVERGENCES)
@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_each_divergence_matches_its_definition(name, beta):
    computed = TOKEN_DIVERGENCES[name](beta)(TEACHER, STUDENT)
    expected = reference_divergence(name, TEACHER.exp().numpy(), STUDENT.exp().numpy(), beta)
    np.testing.assert_allclose(computed.numpy(), expected, rtol=1e-10)


def test_the_kls_take_their_directions():
    # teacher [1/2, 1/2], student [1/4, 3/4]
    teacher, student = torch.tensor([[0.5, 0.5]]).log(), torch.tensor([[0.25, 0.75]]).log()
    assert forward_kl(teacher, student).item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    assert reverse_kl(teacher, student).item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))


def test_beta_zero_is_the_forward_kl_and_one_the_reverse_kl_as_trl_defines_them():
    assert torch.equal(generalized_jsd(TEACHER, STUDENT, beta=0.0), forward_kl(TEACHER, STUDENT))
    assert torch.equal(generalized_jsd(TEACHER, STUDENT, beta=1.0), reverse_kl(TEACHER, STUDENT))


def test_near_its_ends_the_generalized_jsd_is_beta_times_the_kl_of_that_end():
    """TRL's formula tends to 0 at both ends: its ends are defined apart, and the loss jumps there."""
    epsilon = 1e-5
    near_zero = generalized_jsd(TEACHER, STUDENT, beta=epsilon) / epsilon
    near_one = generalized_jsd(TEACHER, STUDENT, beta=1 - epsilon) / epsilon
    torch.testing.assert_close(near_zero, forward_kl(TEACHER, STUDENT), rtol=1e-3, atol=0)
    torch.testing.assert_close(near_one, reverse_kl(TEACHER, STUDENT), rtol=1e-3, atol=0)


def test_the_jsd_at_one_half_is_symmetric_and_at_most_log_two():
    forward, backward = generalized_jsd(TEACHER, STUDENT, 0.5), generalized_jsd(STUDENT, TEACHER, 0.5)
    torch.testing.assert_close(forward, backward)
    far_apart = torch.tensor([[0.0, -60.0], [-60.0, 0.0]], dtype=torch.float64)
    assert generalized_jsd(far_apart[:1], far_apart[1:], 0.5).item() == pytest.approx(math.log(2), rel=1e-9)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_each_divergence_is_positive_and_zero_between_equals(name):
    divergence = TOKEN_DIVERGENCES[name](0.3)
    assert (divergence(TEACHER, STUDENT) > 0).all()
    assert divergence(TEACHER, TEACHER.clone()).abs().max().item() < 1e-12


@pytest.mark.parametrize("name", DIVERGENCES)
def test_an_outcome_of_probability_zero_on_both_sides_adds_nothing_and_gives_finite_gradients(name):
    teacher, student = TEACHER.float(), STUDENT.float().requires_grad_()
    empty = torch.full((len(teacher), 1), -math.inf)
    divergence = TOKEN_DIVERGENCES[name](0.3)
    with_empty = divergence(torch.cat([teacher, empty], dim=1), torch.cat([student, empty], dim=1))
    (gradient,) = torch.autograd.grad(with_empty.sum(), student)
    torch.testing.assert_close(with_empty, divergence(teacher, student))
    assert torch.isfinite(gradient).all()


@pytest.mark.parametrize("beta", [-0.1, 1.5])
def test_a_beta_outside_zero_one_is_refused(beta):
    with pytest.raises(ValueError, match="beta must be in"):
        generalized_jsd(TEACHER, STUDENT, beta)
