import math

import torch
import torch.nn.functional as F

from selfsup.moco.loss import info_nce_logits, info_nce_loss


def test_logits_and_labels_match_a_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    queue = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, -1.0]])
    logits, labels = info_nce_logits(q, k, queue, temperature=0.5)
    expected = torch.tensor([[0.6, 1.0, -1.0, 0.0], [1.0, 0.0, 0.0, -1.0]]) / 0.5
    assert torch.allclose(logits, expected)
    assert labels.tolist() == [0, 0]


def test_loss_equals_the_infonce_formula():
    q = F.normalize(torch.tensor([[1.0, 2.0, 0.5]]), dim=1)
    k = F.normalize(torch.tensor([[1.0, 1.5, 0.0]]), dim=1)
    queue = F.normalize(torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]), dim=1)
    tau = 0.07
    pos = math.exp(float(q @ k.t()) / tau)
    negs = sum(math.exp(float(q @ row) / tau) for row in queue)
    expected = -math.log(pos / (pos + negs))
    assert math.isclose(float(info_nce_loss(q, k, queue, tau)), expected, rel_tol=1e-5)


def test_logits_are_fp32_under_half_inputs():
    q = F.normalize(torch.randn(4, 8), dim=1).bfloat16()
    logits, _ = info_nce_logits(q, q, torch.randn(16, 8).bfloat16(), 0.2)
    assert logits.dtype == torch.float32
