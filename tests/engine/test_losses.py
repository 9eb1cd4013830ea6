"""The distillation loss against numbers worked out by hand."""

import math

import pytest
import torch

from engine.losses import (
    TeacherOutputs,
    cross_entropy_loss,
    feature_cosine,
    feature_mse,
    hard_loss,
    kl_loss,
    logit_mse_loss,
    scheduled_temperature,
)
from engine.objective import Objective
from engine.specs import DistillationConfig


def soft_loss(student, teacher, temperature):
    return kl_loss(student, TeacherOutputs.single(teacher), temperature)


def objective_terms(student, teacher, labels, config):
    return Objective(config)(student, TeacherOutputs.single(teacher), labels, config.temperature, {}, [])


def softmax(logits: list[float], temperature: float = 1.0) -> list[float]:
    exps = [math.exp(value / temperature) for value in logits]
    return [value / sum(exps) for value in exps]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


TEACHER = torch.tensor([[2.0, 0.0]])
STUDENT = torch.tensor([[0.0, 0.0]])


def test_soft_loss_at_temperature_one_is_the_kl_divergence():
    # p = softmax([2, 0]) = [e^2 / (e^2 + 1), 1 / (e^2 + 1)], q = [1/2, 1/2]
    p = [math.e**2 / (math.e**2 + 1), 1 / (math.e**2 + 1)]
    expected = p[0] * math.log(2 * p[0]) + p[1] * math.log(2 * p[1])
    assert expected == pytest.approx(0.327813, abs=1e-6)
    assert soft_loss(STUDENT, TEACHER, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_soft_loss_at_temperature_two_is_t_squared_times_the_softened_kl():
    softened_kl = kl(softmax([2.0, 0.0], 2.0), softmax([0.0, 0.0], 2.0))  # KL(softmax([1, 0]) || [1/2, 1/2])
    assert softened_kl == pytest.approx(0.110944, abs=1e-6)
    assert soft_loss(STUDENT, TEACHER, 2.0).item() == pytest.approx(4 * softened_kl, rel=1e-6)


def test_soft_loss_is_zero_when_the_student_matches_the_teacher():
    assert soft_loss(TEACHER.clone(), TEACHER, 3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_soft_loss_averages_over_the_batch():
    teacher = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    rows = [kl(softmax([2.0, 0.0]), softmax([0.0, 0.0])), kl(softmax([0.0, 1.0]), softmax([1.0, 0.0]))]
    assert soft_loss(student, teacher, 1.0).item() == pytest.approx(sum(rows) / 2, rel=1e-6)


def test_soft_loss_stays_finite_for_extreme_logits():
    loss = soft_loss(torch.tensor([[-500.0, 500.0]]), torch.tensor([[500.0, -500.0]]), 1.0)
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(1000.0, rel=1e-4)


def test_hard_loss_is_the_mean_cross_entropy():
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1])
    # -log(1/2) for the first row, -log(e^0 / (e^1 + e^0)) = log(1 + e) for the second.
    expected = (math.log(2) + math.log(1 + math.e)) / 2
    assert hard_loss(student, labels).item() == pytest.approx(expected, rel=1e-6)


def test_total_weights_the_soft_and_hard_terms():
    config = DistillationConfig(temperature=2.0, alpha=0.7, beta=0.3)
    terms = objective_terms(STUDENT, TEACHER, torch.tensor([1]), config)
    soft = 4 * kl(softmax([2.0, 0.0], 2.0), softmax([0.0, 0.0], 2.0))
    hard = math.log(2)
    assert terms["soft_loss"].item() == pytest.approx(soft, rel=1e-6)
    assert terms["hard_loss"].item() == pytest.approx(hard, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(0.7 * soft + 0.3 * hard, rel=1e-6)


def test_without_labels_the_hard_term_is_skipped():
    config = DistillationConfig(temperature=1.0, alpha=0.7, beta=0.3)
    terms = objective_terms(STUDENT, TEACHER, None, config)
    assert "hard_loss" not in terms
    assert terms["loss"].item() == pytest.approx(0.7 * kl(softmax([2.0, 0.0]), [0.5, 0.5]), rel=1e-6)


def test_gradients_flow_to_the_student_only():
    student = STUDENT.clone().requires_grad_()
    teacher = TEACHER.clone().requires_grad_()
    config = DistillationConfig(temperature=2.0, alpha=1.0, beta=1.0)
    objective_terms(student, teacher.detach(), torch.tensor([0]), config)["loss"].backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert teacher.grad is None


def test_cross_entropy_soft_loss_is_the_kl_plus_the_teachers_entropy_times_t_squared():
    p = softmax([2.0, 0.0], 2.0)
    entropy = -sum(pi * math.log(pi) for pi in p)
    expected = 4 * (kl(p, [0.5, 0.5]) + entropy)  # = 4 * log 2: the student is uniform
    assert expected == pytest.approx(4 * math.log(2), rel=1e-9)
    assert cross_entropy_loss(STUDENT, TeacherOutputs.single(TEACHER), 2.0).item() == pytest.approx(expected)


def test_mse_soft_loss_matches_logits_whatever_the_temperature():
    # ((0 - 2)^2 + (0 - 0)^2) / 2 = 2
    for temperature in (1.0, 5.0):
        assert logit_mse_loss(STUDENT, TeacherOutputs.single(TEACHER), temperature).item() == pytest.approx(
            2.0
        )


def test_two_teachers_mean_is_the_average_of_their_softened_distributions():
    first, second = [2.0, 0.0], [0.0, 1.0]
    for weights, mix in (([0.5, 0.5], 0.5), ([0.75, 0.25], 0.75)):
        target = [
            mix * a + (1 - mix) * b for a, b in zip(softmax(first, 2.0), softmax(second, 2.0), strict=True)
        ]
        teachers = TeacherOutputs(torch.tensor([[first], [second]]), torch.tensor(weights))
        assert teachers.log_probabilities(2.0).exp()[0].tolist() == pytest.approx(target, rel=1e-6)
        expected = 4 * kl(target, softmax([0.0, 0.0], 2.0))
        assert kl_loss(STUDENT, teachers, 2.0).item() == pytest.approx(expected, abs=1e-6)  # float32


def test_temperature_schedule_runs_from_the_start_to_the_final_value():
    assert scheduled_temperature(8.0, None, "linear", 0.7) == 8.0
    assert [scheduled_temperature(8.0, 2.0, "linear", p) for p in (0, 0.5, 1)] == [8.0, 5.0, 2.0]
    assert [scheduled_temperature(8.0, 2.0, "cosine", p) for p in (0, 0.5, 1)] == pytest.approx(
        [8.0, 5.0, 2.0]
    )
    assert scheduled_temperature(8.0, 2.0, "cosine", 0.25) > scheduled_temperature(8.0, 2.0, "linear", 0.25)


def test_feature_losses_by_hand():
    student, teacher = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    assert feature_mse(student, teacher).item() == pytest.approx((1 + 4) / 2)
    assert feature_cosine(student, teacher).item() == pytest.approx(1.0)  # orthogonal
    assert feature_cosine(teacher * 3, teacher).item() == pytest.approx(0.0, abs=1e-7)
