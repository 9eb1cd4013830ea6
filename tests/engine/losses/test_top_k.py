"""The teacher's top-k form: what it stores, that k covering the vocabulary gives the full teacher's losses
and gradients, that at T = 1 the divergence is exactly that of the bucketed distributions (and at most the
full one), that it stays a proper divergence at any T, and what softening at T != 1 gets right and wrong."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.losses.token_level import IGNORE_INDEX, LMHead, TeacherLogits, TopKHead
from engine.losses.top_k import TopKTeacher, bucket_log_probs, softened, top_k_teacher
from tests.engine.losses.token_factories import (
    DIVERGENCES,
    VOCAB,
    gradients,
    losses,
    reference_divergence,
    softmax,
    token_batch,
)

TEMPERATURES = [0.5, 1.0, 2.0]


def teacher_logits(seed: int = 0) -> torch.Tensor:
    return token_batch(seed).teacher_logits()


def test_the_top_k_form_holds_the_k_most_likely_tokens_and_the_rest_of_the_mass():
    logits, k = teacher_logits(), 8
    top_k = top_k_teacher(logits, k)
    assert top_k.token_ids.dtype == torch.int32 and top_k.token_ids.shape == (len(logits), k)
    assert top_k.log_probs.dtype == torch.float16 and top_k.log_probs.shape == (len(logits), k + 1)
    probabilities = softmax(logits.numpy())
    expected_ids = np.argsort(-probabilities, axis=-1)[:, :k]
    np.testing.assert_array_equal(np.sort(top_k.token_ids.numpy()), np.sort(expected_ids))
    top = np.take_along_axis(probabilities, top_k.token_ids.numpy().astype(np.int64), axis=-1)
    stored = top_k.log_probs.double().exp().numpy()
    np.testing.assert_allclose(stored[:, :k], top, rtol=2e-3, atol=1e-8)
    np.testing.assert_allclose(stored[:, k], 1 - top.sum(axis=-1), rtol=2e-3, atol=1e-8)


def test_k_covering_the_vocabulary_leaves_the_rest_a_probability_of_zero():
    assert (top_k_teacher(teacher_logits(), VOCAB).log_probs[:, -1] == -math.inf).all()


@pytest.mark.parametrize("k", [1, 5, VOCAB - 1, VOCAB])
def test_the_buckets_and_their_gradients_are_those_of_a_logsumexp_over_the_other_tokens(k):
    log_probs = F.log_softmax(teacher_logits().double() * 4, dim=-1).requires_grad_()  # some tokens near 0
    token_ids = log_probs.detach().topk(k, dim=-1).indices
    others = log_probs.scatter(-1, token_ids, torch.finfo(log_probs.dtype).min).logsumexp(-1, keepdim=True)
    reference = torch.cat([log_probs.gather(-1, token_ids), others], dim=-1)
    buckets = bucket_log_probs(log_probs, token_ids)
    weights = torch.rand_like(buckets)
    torch.testing.assert_close(buckets, reference, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(*(gradients_of(b, log_probs, weights) for b in (buckets, reference)))


def test_a_student_sure_of_the_teachers_tokens_still_gives_the_rest_a_finite_log_probability():
    logits = torch.tensor([[0.0, 0.0, -200.0, -300.0]], requires_grad=True)  # the rest's mass underflows
    buckets = bucket_log_probs(F.log_softmax(logits, dim=-1), torch.tensor([[0, 1]]))
    assert buckets[0, -1].item() == pytest.approx(math.log(torch.finfo(torch.float32).tiny))
    teacher = torch.tensor([[0.45, 0.45, 0.1]]).log()  # a teacher whose rest has a tenth of the mass
    divergence = F.kl_div(buckets, teacher, log_target=True, reduction="sum")
    divergence.backward()
    assert math.isfinite(divergence.item()) and torch.isfinite(logits.grad).all()


def gradients_of(outputs: torch.Tensor, inputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad((outputs * weights).sum(), inputs, retain_graph=True)[0]


def test_the_top_tokens_are_the_teachers_most_likely():
    logits = teacher_logits()
    assert torch.equal(top_k_teacher(logits, 3).top_tokens(), logits.argmax(dim=-1))


def test_the_teacher_run_on_a_batch_gives_the_losses_and_gradients_of_its_stored_top_k_form():
    batch, k = token_batch(), 8
    run = TopKHead(batch.teacher_hidden, LMHead.of(batch.teacher_head), k)  # formed a chunk at a time
    stored = top_k_teacher(batch.teacher_logits(), k)  # formed at once, as the cache stores it
    ran, read = losses(batch, teacher=run), losses(batch, teacher=stored)
    assert torch.equal(ran.divergence, read.divergence) and torch.equal(ran.kl_to_teacher, read.kl_to_teacher)
    assert all(map(torch.equal, gradients(ran.divergence, batch), gradients(read.divergence, batch)))


@pytest.mark.parametrize("k", [0, VOCAB + 1])
def test_a_k_outside_the_vocabulary_is_refused(k):
    with pytest.raises(ValueError, match="k must be between 1"):
        top_k_teacher(teacher_logits(), k)


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_k_covering_the_vocabulary_gives_the_full_teachers_losses_and_gradients(divergence, temperature):
    """Exactly with log-probabilities kept in float32; within float16's rounding as the cache keeps them."""
    batch = token_batch()
    full = losses(batch, divergence=divergence, temperature=temperature)
    full_gradients = gradients(full.divergence, batch)
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
        top_k = top_k_teacher(batch.teacher_logits(), VOCAB, log_prob_dtype=dtype)
        cached = losses(batch, divergence=divergence, teacher=top_k, temperature=temperature)
        for term in ("divergence", "cross_entropy", "kl_to_teacher", "top1_agreement"):
            torch.testing.assert_close(getattr(cached, term), getattr(full, term), rtol=tolerance, atol=1e-6)
        for got, expected in zip(gradients(cached.divergence, batch), full_gradients, strict=True):
            assert torch.isfinite(got).all()
            torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance * expected.abs().max())


def bucketed(probabilities: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
    """Probabilities over the vocabulary aggregated onto the k tokens and the rest."""
    top = np.take_along_axis(probabilities, token_ids, axis=-1)
    return np.concatenate([top, probabilities.sum(axis=-1, keepdims=True) - top.sum(-1, keepdims=True)], -1)


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("k", [1, 5])
def test_at_temperature_one_the_divergence_is_that_of_the_bucketed_distributions_and_at_most_the_full_one(
    divergence, k
):
    batch = token_batch(seed=6)
    top_k = top_k_teacher(batch.teacher_logits(), k, log_prob_dtype=torch.float32)
    result = losses(batch, divergence=divergence, teacher=top_k, temperature=1.0)
    counted = (batch.labels != IGNORE_INDEX).numpy()
    teacher = softmax(batch.teacher_logits().numpy())[counted]
    student = softmax(batch.student_logits().detach().numpy())[counted]
    ids = top_k.token_ids.numpy().astype(np.int64)[counted]
    per_token = reference_divergence(divergence, bucketed(teacher, ids), bucketed(student, ids))
    assert result.divergence.item() == pytest.approx(per_token.mean(), rel=1e-5)
    assert result.divergence.item() < losses(batch, divergence=divergence, temperature=1.0).divergence.item()


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_the_top_k_divergence_is_proper_at_any_temperature(divergence, temperature):
    """> 0 between a student and the teacher, 0 for a student equal to the teacher."""
    batch = token_batch()
    top_k = top_k_teacher(batch.teacher_logits(), 5, log_prob_dtype=torch.float32)
    apart = losses(batch, divergence=divergence, teacher=top_k, temperature=temperature)
    assert apart.divergence.item() > 0
    batch.hidden, batch.head = batch.teacher_hidden.clone().requires_grad_(), batch.teacher_head
    same = losses(batch, divergence=divergence, teacher=top_k, temperature=temperature)
    assert abs(same.divergence.item()) < 1e-6
    assert same.top1_agreement.item() == 1


def test_float16_storage_moves_the_loss_by_little():
    batch = token_batch()
    stored = {
        dtype: losses(batch, teacher=top_k_teacher(batch.teacher_logits(), 8, log_prob_dtype=dtype))
        for dtype in (torch.float16, torch.float32)
    }
    assert stored[torch.float16].divergence.item() == pytest.approx(
        stored[torch.float32].divergence.item(), rel=1e-3
    )


def exact_softened_rest(logits: torch.Tensor, top_k: TopKTeacher, temperature: float) -> np.ndarray:
    """The share of the tokens outside the top k in the teacher's distribution softened at T over the whole
    vocabulary, which the top-k form cannot know."""
    softened_full = softmax(logits.numpy(), temperature)
    ids = top_k.token_ids.numpy().astype(np.int64)
    return 1 - np.take_along_axis(softened_full, ids, axis=-1).sum(axis=-1)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_softening_keeps_the_ratios_among_the_top_k_exact(temperature):
    logits, k = teacher_logits(), 6
    top_k = top_k_teacher(logits, k, log_prob_dtype=torch.float32)
    softened_top = softened(top_k.log_probs, temperature)[:, :k]
    top_logits = logits.gather(-1, top_k.token_ids.long())
    torch.testing.assert_close(
        softened_top - softened_top[:, :1], (top_logits - top_logits[:, :1]) / temperature, rtol=0, atol=1e-5
    )


def test_softening_gives_the_rest_less_than_its_exact_share_above_temperature_one_and_more_below():
    """The rest is softened as one outcome: r^(1/T) where the exact share needs sum_j p_j^(1/T), which is
    larger for T > 1 and smaller for T < 1 (a power's sub- and superadditivity)."""
    logits, k = teacher_logits(), 6
    top_k = top_k_teacher(logits, k, log_prob_dtype=torch.float32)
    for temperature, compare in ((2.0, np.less), (0.5, np.greater)):
        approximate = softened(top_k.log_probs, temperature)[:, -1].exp().double().numpy()
        exact = exact_softened_rest(logits, top_k, temperature)
        assert compare(approximate, exact).all(), temperature
    at_one = softened(top_k.log_probs, 1.0)[:, -1].exp().double().numpy()
    np.testing.assert_allclose(at_one, exact_softened_rest(logits, top_k, 1.0), rtol=1e-4)


def test_the_top_k_and_the_full_teacher_take_the_same_student():
    batch = token_batch()
    student = F.log_softmax(LMHead.of(batch.head).logits(batch.hidden), dim=-1)
    _, full_student = TeacherLogits(batch.teacher_logits()).distributions(student, temperature=1.0)
    top_k = top_k_teacher(batch.teacher_logits(), 4)
    _, bucket_student = top_k.distributions(student, temperature=1.0)
    top = full_student.gather(-1, top_k.token_ids.long())
    torch.testing.assert_close(bucket_student[:, :-1], top)
    torch.testing.assert_close(bucket_student[:, -1], torch.log1p(-top.exp().sum(-1)), rtol=1e-4, atol=1e-6)
    assert F.log_softmax(bucket_student, dim=-1).allclose(bucket_student, atol=1e-6)
