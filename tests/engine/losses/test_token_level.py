"""The chunked token-level losses: any chunking gives the whole-batch values and gradients, which match the
definitions computed on the whole logits; only the counted tokens count; memory holds one chunk of
`[tokens, vocab]`; the divergences train; bf16 autocast stays close."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from engine.losses.token_level import CHUNK_LOGITS, IGNORE_INDEX, TeacherLogits, default_chunk_tokens
from engine.losses.top_k import top_k_teacher
from tests.engine.losses.token_factories import (
    COUNTED,
    DIVERGENCES,
    HIDDEN,
    TOKENS,
    VOCAB,
    gradients,
    losses,
    reference_divergence,
    softmax,
    token_batch,
)

WHOLE = TOKENS  # a chunk that holds every token


def assert_same_losses(got, expected, rtol=1e-5, atol=1e-6):
    for name in ("divergence", "cross_entropy", "kl_to_teacher", "top1_agreement"):
        torch.testing.assert_close(
            getattr(got, name), getattr(expected, name), rtol=rtol, atol=atol, msg=name
        )
    assert got.tokens == expected.tokens


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("chunk_tokens", [1, 7, 16, COUNTED])
def test_any_chunking_gives_the_whole_batch_values_and_gradients(divergence, chunk_tokens):
    batch = token_batch()
    chunked = losses(batch, divergence=divergence, chunk_tokens=chunk_tokens)
    whole = losses(batch, divergence=divergence, chunk_tokens=WHOLE)
    assert_same_losses(chunked, whole)
    for term in ("divergence", "cross_entropy"):
        got, expected = gradients(getattr(chunked, term), batch), gradients(getattr(whole, term), batch)
        for got_gradient, expected_gradient in zip(got, expected, strict=True):
            torch.testing.assert_close(got_gradient, expected_gradient, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_the_losses_are_their_definitions_on_the_whole_logits(divergence):
    batch, temperature = token_batch(seed=3), 2.0
    result = losses(batch, divergence=divergence, temperature=temperature, chunk_tokens=7)
    counted = batch.labels != IGNORE_INDEX
    student, teacher = batch.student_logits()[counted], batch.teacher_logits()[counted]
    student_numpy, teacher_numpy = student.detach().numpy(), teacher.numpy()
    per_token = reference_divergence(
        divergence, softmax(teacher_numpy, temperature), softmax(student_numpy, temperature)
    )
    assert result.divergence.item() == pytest.approx(per_token.mean() * temperature**2, rel=1e-5)
    expected_cross_entropy = F.cross_entropy(batch.student_logits(), batch.labels, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(result.cross_entropy, expected_cross_entropy)
    kl = reference_divergence("forward_kl", softmax(teacher_numpy), softmax(student_numpy))
    assert result.kl_to_teacher.item() == pytest.approx(kl.mean(), rel=1e-5)
    agreement = (student_numpy.argmax(-1) == teacher_numpy.argmax(-1)).mean()
    assert result.top1_agreement.item() == pytest.approx(agreement)
    assert result.tokens == COUNTED


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_the_gradients_are_those_of_the_divergence_on_the_whole_logits(divergence):
    batch, temperature = token_batch(seed=4), 0.7
    result = losses(batch, divergence=divergence, temperature=temperature, chunk_tokens=16)
    counted = batch.labels != IGNORE_INDEX
    q = F.softmax(batch.student_logits()[counted] / temperature, dim=-1)
    p = F.softmax(batch.teacher_logits()[counted] / temperature, dim=-1)
    beta = 0.3  # the factories' JSD_BETA, the mixture on the probabilities
    per_token = {
        "forward_kl": (p * (p.log() - q.log())).sum(-1),
        "reverse_kl": (q * (q.log() - p.log())).sum(-1),
        "jsd": beta * (p * (p / (beta * p + (1 - beta) * q)).log()).sum(-1)
        + (1 - beta) * (q * (q / (beta * p + (1 - beta) * q)).log()).sum(-1),
    }[divergence]
    expected = gradients(per_token.mean() * temperature**2, batch)
    for got, wanted in zip(gradients(result.divergence, batch), expected, strict=True):
        torch.testing.assert_close(got, wanted, rtol=1e-4, atol=1e-7)


def test_the_tokens_that_do_not_count_change_nothing():
    batch = token_batch()
    before = losses(batch)
    hidden_gradient, *_ = gradients(before.divergence + before.cross_entropy, batch)
    ignored = batch.labels == IGNORE_INDEX
    assert hidden_gradient[ignored].abs().max().item() == 0
    with torch.no_grad():
        batch.teacher_hidden[ignored] += 5 * torch.randn(int(ignored.sum()), batch.teacher_hidden.shape[1])
        batch.hidden[ignored] += 5 * torch.randn(int(ignored.sum()), batch.hidden.shape[1])
    assert_same_losses(losses(batch), before, rtol=0, atol=0)


def test_a_batch_where_no_token_counts_gives_zeros_that_backpropagate():
    batch = token_batch()
    batch.labels[:] = IGNORE_INDEX
    result = losses(batch)
    assert result.tokens == 0
    assert result.divergence.item() == result.cross_entropy.item() == result.top1_agreement.item() == 0
    hidden_gradient, *_ = gradients(result.divergence + result.cross_entropy, batch)
    assert hidden_gradient.abs().max().item() == 0


def test_the_teacher_as_logits_or_as_hidden_states_and_head_gives_the_same_losses():
    batch = token_batch()
    assert_same_losses(losses(batch, teacher=TeacherLogits(batch.teacher_logits())), losses(batch))


def test_the_kl_to_the_teacher_and_the_agreement_carry_no_gradient():
    result = losses(token_batch())
    assert result.divergence.requires_grad and result.cross_entropy.requires_grad
    assert not result.kl_to_teacher.requires_grad and not result.top1_agreement.requires_grad


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("top_k", [None, 8])
def test_a_few_steps_on_the_student_head_lower_the_divergence(divergence, top_k):
    """Adam, as the JSD's gradients are small for plain SGD; from the full teacher and from its top 8."""
    batch = token_batch(seed=5)
    batch.hidden.requires_grad_(False)
    teacher = None if top_k is None else top_k_teacher(batch.teacher_logits(), top_k)
    optimizer = torch.optim.Adam(batch.head.parameters(), lr=0.05)
    first = losses(batch, divergence=divergence, teacher=teacher, temperature=1.0)
    for _ in range(15):
        result = losses(batch, divergence=divergence, teacher=teacher, temperature=1.0)
        optimizer.zero_grad()
        result.divergence.backward()
        optimizer.step()
    last = losses(batch, divergence=divergence, teacher=teacher, temperature=1.0)
    assert last.divergence.item() < 0.6 * first.divergence.item()
    assert last.kl_to_teacher.item() < first.kl_to_teacher.item()


def test_bf16_autocast_runs_and_stays_close_to_float32():
    batch = token_batch()
    full = losses(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = losses(batch)
    assert_same_losses(half, full, rtol=3e-2, atol=1e-2)
    for got, expected in zip(
        gradients(half.divergence, batch), gradients(full.divergence, batch), strict=True
    ):
        assert F.cosine_similarity(got.flatten(), expected.flatten(), dim=0).item() > 0.99


def test_only_the_last_chunk_keeps_tensors_with_a_vocabulary_dimension_for_backward():
    """Between forward and backward, every chunk but the last keeps only what checkpointing keeps: its
    inputs, no logits. The last keeps its own, which the backward frees before it recomputes any other."""
    batch = token_batch()
    last_chunk = COUNTED % 16 or 16
    saved = []

    def keep_shape(tensor):
        saved.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep_shape, lambda tensor: tensor):
        losses(batch, chunk_tokens=16)
        chunked = list(saved)
        F.log_softmax(batch.student_logits(), dim=-1).sum().backward()  # the unchunked way: kept logits
    activations = [shape for shape in chunked if VOCAB in shape and shape != (HIDDEN, VOCAB)]  # not the head
    assert activations and all(shape[0] == last_chunk for shape in activations), chunked
    assert (TOKENS, VOCAB) in saved[len(chunked) :]  # what the hook would have seen


class LargestTensor(TorchDispatchMode):
    """Records the most elements of any tensor an operation returns."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in result if isinstance(result, tuple | list) else [result]:
            if isinstance(value, torch.Tensor):
                self.elements = max(self.elements, value.numel())
        return result


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_no_tensor_formed_forward_or_backward_is_larger_than_one_chunk_of_logits(divergence):
    """Chunks of 32 tokens: the largest tensor is 32 x vocab (the heads' weights, vocab x 16 and x 24,
    are smaller), where the whole batch forms its counted tokens x vocab."""
    chunk_tokens = 32
    batch = token_batch()
    sizes = []
    for chunk in (chunk_tokens, WHOLE):
        with LargestTensor() as largest:
            result = losses(batch, divergence=divergence, chunk_tokens=chunk)
            (result.divergence + result.cross_entropy).backward()
        sizes.append(largest.elements)
    assert sizes == [chunk_tokens * VOCAB, COUNTED * VOCAB]


def test_a_chunk_size_below_one_is_refused():
    with pytest.raises(ValueError, match="chunk_tokens"):
        losses(token_batch(), chunk_tokens=0)


@pytest.mark.parametrize("vocab", [VOCAB, 32_768, 151_936])
def test_the_default_chunk_holds_as_many_tokens_as_fit_the_same_number_of_logits_whatever_the_vocabulary(
    vocab,
):
    tokens = default_chunk_tokens(vocab)
    assert tokens * vocab <= CHUNK_LOGITS < (tokens + 1) * vocab
