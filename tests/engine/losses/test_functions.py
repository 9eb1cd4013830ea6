"""The distillation loss against numbers worked out by hand."""

import math

import pytest
import torch

from engine.losses.functions import (
    ResponseBatch,
    TeacherOutputs,
    cross_entropy_loss,
    decoupled_kd_loss,
    dist_loss,
    feature_cosine,
    feature_mse,
    hard_loss,
    kl_loss,
    logit_mse_loss,
    scheduled_temperature,
)
from engine.losses.objective import Objective
from engine.plan.specs import DistillationConfig, DISTWeights, DKDWeights


def one_teacher(student, teacher, temperature, labels=None):
    return ResponseBatch(student, TeacherOutputs.single(teacher), temperature, labels)


def soft_loss(student, teacher, temperature):
    return kl_loss(one_teacher(student, teacher, temperature))


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
    assert cross_entropy_loss(one_teacher(STUDENT, TEACHER, 2.0)).item() == pytest.approx(expected)


def test_mse_soft_loss_matches_logits_whatever_the_temperature():
    # ((0 - 2)^2 + (0 - 0)^2) / 2 = 2
    for temperature in (1.0, 5.0):
        assert logit_mse_loss(one_teacher(STUDENT, TEACHER, temperature)).item() == pytest.approx(2.0)


def test_two_teachers_mean_is_the_average_of_their_softened_distributions():
    first, second = [2.0, 0.0], [0.0, 1.0]
    for weights, mix in (([0.5, 0.5], 0.5), ([0.75, 0.25], 0.75)):
        target = [
            mix * a + (1 - mix) * b for a, b in zip(softmax(first, 2.0), softmax(second, 2.0), strict=True)
        ]
        teachers = TeacherOutputs(torch.tensor([[first], [second]]), torch.tensor(weights))
        assert teachers.log_probabilities(2.0).exp()[0].tolist() == pytest.approx(target, rel=1e-6)
        expected = 4 * kl(target, softmax([0.0, 0.0], 2.0))
        assert kl_loss(ResponseBatch(STUDENT, teachers, 2.0)).item() == pytest.approx(expected, abs=1e-6)


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


# DKD, DIST and logit standardisation, on 3 samples of 3 classes

TEACHER_3 = [[2.0, 0.5, -1.0], [0.0, 1.5, 0.5], [-0.5, 0.0, 3.0]]
STUDENT_3 = [[1.0, 0.0, 0.0], [0.5, 0.5, -0.5], [0.0, -1.0, 1.0]]
LABELS_3 = [0, 2, 2]  # the second is not the teacher's top class


def pearson(x: list[float], y: list[float]) -> float:
    dx, dy = [v - sum(x) / len(x) for v in x], [v - sum(y) / len(y) for v in y]
    return sum(a * b for a, b in zip(dx, dy, strict=True)) / math.sqrt(
        sum(a * a for a in dx) * sum(b * b for b in dy)
    )


def by_hand_dkd(teacher_rows, student_rows, labels, temperature, target_weight, non_target_weight) -> float:
    tckd = nckd = 0.0
    for teacher, student, label in zip(teacher_rows, student_rows, labels, strict=True):
        p, q = softmax(teacher, temperature), softmax(student, temperature)
        tckd += kl([p[label], 1 - p[label]], [q[label], 1 - q[label]])
        p_others = [v / (1 - p[label]) for c, v in enumerate(p) if c != label]
        q_others = [v / (1 - q[label]) for c, v in enumerate(q) if c != label]
        nckd += kl(p_others, q_others)
    count = len(labels)
    return (target_weight * tckd / count + non_target_weight * nckd / count) * temperature**2


def test_dkd_is_the_weighted_target_and_non_target_kls_by_hand():
    expected = by_hand_dkd(TEACHER_3, STUDENT_3, LABELS_3, 2.0, target_weight=1.5, non_target_weight=8.0)
    batch = one_teacher(torch.tensor(STUDENT_3), torch.tensor(TEACHER_3), 2.0, torch.tensor(LABELS_3))
    loss = decoupled_kd_loss(batch, DKDWeights(target_weight=1.5, non_target_weight=8.0))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_dkd_weighted_one_and_one_minus_the_teachers_target_probability_is_the_kl():
    """Zhao et al.'s decomposition: KD = TCKD + (1 - p_t) * NCKD, for one sample."""
    batch = one_teacher(torch.tensor(STUDENT_3[:1]), torch.tensor(TEACHER_3[:1]), 2.0, torch.tensor([0]))
    weights = DKDWeights(target_weight=1.0, non_target_weight=1 - softmax(TEACHER_3[0], 2.0)[0])
    assert decoupled_kd_loss(batch, weights).item() == pytest.approx(kl_loss(batch).item(), rel=1e-5)


def test_dkd_without_labels_takes_the_teachers_top_class():
    teacher_top = [0, 1, 2]  # the class of each row's largest teacher logit
    expected = by_hand_dkd(TEACHER_3, STUDENT_3, teacher_top, 2.0, target_weight=1.0, non_target_weight=8.0)
    batch = one_teacher(torch.tensor(STUDENT_3), torch.tensor(TEACHER_3), 2.0)
    assert decoupled_kd_loss(batch, DKDWeights()).item() == pytest.approx(expected, rel=1e-5)


def test_dist_is_one_minus_the_mean_row_and_column_correlations_by_hand():
    student = [softmax(row, 2.0) for row in STUDENT_3]
    teacher = [softmax(row, 2.0) for row in TEACHER_3]
    inter = 1 - sum(pearson(s, t) for s, t in zip(student, teacher, strict=True)) / 3
    columns = [([row[c] for row in student], [row[c] for row in teacher]) for c in range(3)]
    intra = 1 - sum(pearson(s, t) for s, t in columns) / 3
    expected = (0.5 * inter + 2.0 * intra) * 4
    batch = one_teacher(torch.tensor(STUDENT_3), torch.tensor(TEACHER_3), 2.0)
    loss = dist_loss(batch, DISTWeights(inter_weight=0.5, intra_weight=2.0))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def authors_dist(student_logits, teacher_logits, tau, beta, gamma):
    """DIST as its authors' code (DIST_KD) computes it: the norms' product plus 1e-8, T^2 on each relation,
    the intra-class relation as the inter-class one of the transposed probabilities."""

    def inter_class_relation(y_s, y_t):
        a, b = y_s - y_s.mean(1).unsqueeze(1), y_t - y_t.mean(1).unsqueeze(1)
        return 1 - ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)).mean()

    y_s, y_t = (student_logits / tau).softmax(dim=1), (teacher_logits / tau).softmax(dim=1)
    inter_loss = tau**2 * inter_class_relation(y_s, y_t)
    intra_loss = tau**2 * inter_class_relation(y_s.transpose(0, 1), y_t.transpose(0, 1))
    return beta * inter_loss + gamma * intra_loss


@pytest.mark.parametrize("scale", [1.0, 50.0, 1e-4], ids=["ordinary", "peaked", "near-uniform"])
def test_dist_is_the_authors_formula_epsilon_included(scale):
    """Peaked or near-uniform probabilities centre to tiny vectors, where the 1e-8 added to the norms'
    product counts (cosine similarity's bound on each norm differs by a few percent there). In float64,
    so that rounding probabilities near 1/classes does not swamp the epsilon."""
    generator = torch.Generator().manual_seed(0)
    student, teacher = (torch.randn(8, 10, generator=generator, dtype=torch.float64) * scale for _ in "st")
    expected = authors_dist(student, teacher, tau=2.0, beta=0.5, gamma=2.0).item()
    batch = one_teacher(student, teacher, 2.0)
    loss = dist_loss(batch, DISTWeights(inter_weight=0.5, intra_weight=2.0))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_logit_standardization_z_scores_the_logits_of_the_soft_loss_only():
    student, teacher = [1.0, 2.0, 3.0], [0.0, 0.0, 6.0]
    # both means are 2; the sample standard deviations sqrt((1 + 0 + 1) / 2) = 1 and sqrt((4 + 4 + 16) / 2)
    student_z, teacher_z = [-1.0, 0.0, 1.0], [v / math.sqrt(12) for v in (-2.0, -2.0, 4.0)]
    config = DistillationConfig(temperature=2.0, alpha=1.0, beta=1.0, logit_standardization=True)
    terms = objective_terms(torch.tensor([student]), torch.tensor([teacher]), torch.tensor([0]), config)
    expected_soft = 4 * kl(softmax(teacher_z, 2.0), softmax(student_z, 2.0))
    assert terms["soft_loss"].item() == pytest.approx(expected_soft, rel=1e-5)
    assert terms["hard_loss"].item() == pytest.approx(-math.log(softmax(student)[0]), rel=1e-6)


@pytest.mark.parametrize("soft_loss_name", ["kl", "ce", "dkd"])
def test_standardized_soft_losses_ignore_the_students_logit_scale_and_shift(soft_loss_name):
    config = DistillationConfig(soft_loss=soft_loss_name, logit_standardization=True)
    student, teacher, labels = torch.tensor(STUDENT_3), torch.tensor(TEACHER_3), torch.tensor(LABELS_3)
    soft = objective_terms(student, teacher, labels, config)["soft_loss"].item()
    scaled = objective_terms(7 * student - 3, teacher, labels, config)["soft_loss"].item()
    assert scaled == pytest.approx(soft, rel=1e-5)


@pytest.mark.parametrize(
    ("name", "weights", "loss"),
    [
        ("dkd", DKDWeights(target_weight=2.0, non_target_weight=3.0), decoupled_kd_loss),
        ("dist", DISTWeights(inter_weight=2.0, intra_weight=3.0), dist_loss),
    ],
)
def test_the_objective_passes_the_labels_and_the_configs_weights(name, weights, loss):
    config = DistillationConfig(soft_loss=name, **{name: weights})
    student, teacher, labels = torch.tensor(STUDENT_3), torch.tensor(TEACHER_3), torch.tensor(LABELS_3)
    expected = loss(one_teacher(student, teacher, config.temperature, labels), weights).item()
    assert objective_terms(student, teacher, labels, config)["soft_loss"].item() == pytest.approx(expected)


NEW_LOSSES = [
    pytest.param(lambda batch: decoupled_kd_loss(batch, DKDWeights()), id="dkd"),
    pytest.param(lambda batch: dist_loss(batch, DISTWeights()), id="dist"),
]


@pytest.mark.parametrize("loss", NEW_LOSSES)
def test_dkd_and_dist_are_zero_when_the_student_matches_the_teacher(loss):
    teacher = torch.tensor(TEACHER_3)
    assert loss(one_teacher(teacher.clone(), teacher, 3.0, torch.tensor(LABELS_3))).item() == pytest.approx(
        0.0, abs=1e-5
    )


@pytest.mark.parametrize("loss", NEW_LOSSES)
def test_dkd_and_dist_stay_finite_with_gradients_for_extreme_logits(loss):
    student = torch.tensor([[-500.0, 500.0, 0.0], [500.0, 0.0, -500.0]], requires_grad=True)
    teacher = torch.tensor([[500.0, -500.0, 0.0], [0.0, 500.0, -500.0]])
    value = loss(one_teacher(student, teacher, 1.0, torch.tensor([0, 1])))
    value.backward()
    assert math.isfinite(value.item()) and value.item() > 0
    assert torch.isfinite(student.grad).all()


def test_dkd_is_the_kls_of_the_extreme_distributions():
    # target 0: the binary distributions are [1, 0] (teacher) and [e^-1000, 1] (student), KL 1000; the
    # others, [e^-500, 1] and [1, e^-500] (classes 1 and 2), KL 500
    student, teacher = torch.tensor([[-500.0, 500.0, 0.0]]), torch.tensor([[500.0, -500.0, 0.0]])
    loss = decoupled_kd_loss(
        one_teacher(student, teacher, 1.0), DKDWeights(target_weight=1.0, non_target_weight=8.0)
    )
    assert loss.item() == pytest.approx(1000 + 8 * 500, rel=1e-5)


@pytest.mark.parametrize("soft_loss_name", ["dkd", "dist", "kl"])
def test_dkd_dist_and_standardized_kl_give_the_student_finite_gradients(soft_loss_name):
    config = DistillationConfig(soft_loss=soft_loss_name, logit_standardization=soft_loss_name == "kl")
    for rows in (3, 1):  # a batch of one sample: DIST's per-class correlations have nothing to correlate
        student = torch.tensor(STUDENT_3[:rows], requires_grad=True)
        objective_terms(student, torch.tensor(TEACHER_3[:rows]), None, config)["loss"].backward()
        assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", NEW_LOSSES)
def test_with_two_teachers_dkd_and_dist_read_the_mixture_of_their_distributions(loss):
    first, second, temperature = TEACHER_3, STUDENT_3, 2.0
    mixture = [
        [0.75 * a + 0.25 * b for a, b in zip(softmax(x, temperature), softmax(y, temperature), strict=True)]
        for x, y in zip(first, second, strict=True)
    ]
    # one teacher whose logits / T are the mixture's log-probabilities has the mixture as its distribution
    mixture_teacher = torch.tensor([[temperature * math.log(v) for v in row] for row in mixture])
    student, labels = torch.zeros(3, 3), torch.tensor(LABELS_3)
    teachers = TeacherOutputs(torch.tensor([first, second]), torch.tensor([0.75, 0.25]))
    expected = loss(one_teacher(student, mixture_teacher, temperature, labels)).item()
    assert loss(ResponseBatch(student, teachers, temperature, labels)).item() == pytest.approx(
        expected, rel=1e-5
    )
