"""The NCE and softmax losses of CMC / InsDis against hand computations and the original NCECriterion, and the
trainers' objectives built on them."""

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.cmc.loss import cmc_objective, instance_objective, nce_loss, softmax_loss


def original_nce_criterion(x: torch.Tensor, n_data: int, eps: float = 1e-7) -> torch.Tensor:
    """The original ``NCECriterion.forward`` arithmetic (``select``/``narrow``, ``sum(0)``), as a reference."""
    bsz, m = x.shape[0], x.size(1) - 1
    pn = 1 / float(n_data)
    p_pos = x.select(1, 0)
    log_d1 = torch.div(p_pos, p_pos.add(m * pn + eps)).log_()
    p_neg = x.narrow(1, 1, m)
    log_d0 = torch.div(p_neg.clone().fill_(m * pn), p_neg.add(m * pn + eps)).log_()
    return -(log_d1.sum(0) + log_d0.view(-1, 1).sum(0)) / bsz


def test_nce_loss_one_row_by_hand():
    # N = 4, K = 2: m·P_n = 2/4 = 0.5.
    # L = −[ln(0.5/(0.5+0.5)) + ln(0.5/(0.25+0.5)) + ln(0.5/(0.1+0.5))] = ln 2 + ln 1.5 + ln 1.2 = ln 3.6
    loss = nce_loss(torch.tensor([[0.5, 0.25, 0.1]]), num_data=4)
    assert loss.shape == ()
    assert math.isclose(float(loss), 1.2809338, rel_tol=1e-6)


def test_nce_loss_is_the_batch_mean():
    # second row: −[ln(0.2/(0.2+0.5)) + ln(0.5/(0.5+0.5)) + ln(0.5/(0+0.5))] = ln 3.5 + ln 2 + 0 = ln 7
    probs = torch.tensor([[0.5, 0.25, 0.1], [0.2, 0.5, 0.0]])
    assert math.isclose(float(nce_loss(probs, num_data=4)), (1.2809338 + 1.9459101) / 2, rel_tol=1e-6)


def test_nce_loss_eps_sits_in_the_denominators_only():
    # N = 1e7, K = 1: m·P_n = 1e-7 = ε, so each ratio is 1e-7 / (1e-7 + 1e-7 + 1e-7) = 1/3: L = 2·ln 3
    loss = nce_loss(torch.tensor([[1e-7, 1e-7]]), num_data=10_000_000)
    assert math.isclose(float(loss), 2.1972246, rel_tol=1e-5)
    assert math.isclose(
        float(nce_loss(torch.tensor([[1e-7, 1e-7]]), 10_000_000, eps=0.0)), 2 * math.log(2), rel_tol=1e-5
    )


def test_nce_loss_equals_the_original_criterion_with_gradients():
    probs = torch.rand(6, 17, generator=torch.Generator().manual_seed(0)).mul(1e-3).requires_grad_(True)
    ours = nce_loss(probs, num_data=1000)
    ours.backward()
    grad = probs.grad.clone()
    probs.grad = None
    reference = original_nce_criterion(probs, 1000)
    reference.backward()
    torch.testing.assert_close(ours, reference.squeeze(0))
    torch.testing.assert_close(grad, probs.grad)


def test_softmax_loss_by_hand():
    # row 0: ln(1 + 2e^-2) = 0.2395448; row 1: −ln(e^0 / (e^0 + e^1 + e^-1)) = ln(1 + e + 1/e) = 1.4076060
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, -1.0]])
    assert math.isclose(float(softmax_loss(logits[:1])), 0.2395448, rel_tol=1e-6)
    assert math.isclose(float(softmax_loss(logits)), (0.2395448 + 1.4076060) / 2, rel_tol=1e-6)
    assert torch.equal(softmax_loss(logits), F.cross_entropy(logits, torch.zeros(2, dtype=torch.long)))


def test_losses_run_in_fp32_and_batch_of_one_keeps_its_shape():
    probs = torch.rand(1, 5).bfloat16()  # the original's .squeeze() broke B = 1; [1, K+1] is kept here
    assert nce_loss(probs, 100).dtype == torch.float32
    assert softmax_loss(probs).dtype == torch.float32


def test_losses_validate_shapes():
    with pytest.raises(ValueError, match="K >= 1"):
        nce_loss(torch.rand(3, 1), 10)
    with pytest.raises(ValueError, match="num_data"):
        nce_loss(torch.rand(3, 4), 0)
    with pytest.raises(ValueError, match=r"\[B, K\+1\]"):
        softmax_loss(torch.rand(3, 4, 1))


@pytest.mark.parametrize("softmax", [False, True])
def test_the_trainers_objectives_sum_both_views_and_log_the_positive_column(softmax):
    gen = torch.Generator().manual_seed(3)
    out_l, out_ab = torch.rand(4, 6, generator=gen) + 0.01, torch.rand(4, 6, generator=gen) + 0.01
    term = (lambda s: softmax_loss(s)) if softmax else (lambda s: nce_loss(s, 50))
    cmc = cmc_objective(out_l, out_ab, softmax=softmax, num_data=50)
    assert torch.equal(cmc["l_loss"], term(out_l)) and torch.equal(cmc["ab_loss"], term(out_ab))
    assert torch.equal(cmc["loss"], term(out_l) + term(out_ab))  # L_CMC: both directions
    assert torch.equal(cmc["l_prob"], out_l[:, 0].mean()) and torch.equal(cmc["ab_prob"], out_ab[:, 0].mean())
    ins = instance_objective(out_l, softmax=softmax, num_data=50)
    assert torch.equal(ins["loss"], term(out_l)) and torch.equal(ins["prob"], out_l[:, 0].mean())
