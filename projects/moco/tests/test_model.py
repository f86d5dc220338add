import pytest
import torch
import torch.nn.functional as F

from selfsup.moco.loss import info_nce_logits
from selfsup.moco.model import MoCo
from selfsup.shared.models.backbones import build_backbone
from selfsup.shared.models.split_batchnorm import SplitBatchNorm2d


def tiny_moco(**kwargs) -> MoCo:
    torch.manual_seed(0)
    defaults = dict(dim=8, num_keys=10, momentum=0.5)
    defaults.update(kwargs)
    return MoCo(build_backbone("resnet18", width=4, cifar_stem=True), **defaults)


class OriginalQueue:
    """eveningglow/MoCo's queue, line for line: a plain tensor, initialised from the collected key batches
    (``torch.cat``), and after every step ``queue = torch.cat([k, queue[:K - N]], dim=0)``."""

    def __init__(self, init_batches: list[torch.Tensor], num_keys: int) -> None:
        self.queue = torch.cat(init_batches, dim=0)[:num_keys]
        self.num_keys = num_keys

    def update(self, k: torch.Tensor) -> None:
        self.queue = torch.cat([k, self.queue[: self.num_keys - k.shape[0]]], dim=0)


def test_ordered_queue_equals_the_original_queue_update_across_the_wrap_around():
    num_keys, dim = 12, 8
    model = tiny_moco(num_keys=num_keys, dim=dim)
    generator = torch.Generator().manual_seed(0)
    init = [torch.randn(5, dim, generator=generator) for _ in range(3)]  # 15 keys collected, 12 kept
    original = OriginalQueue(init, num_keys)
    model.init_queue(torch.cat(init))
    assert torch.equal(model.ordered_queue(), original.queue)
    # batch sizes that do not divide K (the last batch of an epoch is smaller), so batches straddle the end
    for step, n in enumerate([5, 5, 3, 5, 4, 5, 1, 5, 5, 2, 5, 12]):
        k = torch.randn(n, dim, generator=generator)
        model.enqueue(k)
        original.update(k)
        assert torch.equal(model.ordered_queue(), original.queue), step
    assert model.queue.shape == (num_keys, dim)


def test_queue_is_fifo_and_wraps_around():
    model = tiny_moco(num_keys=5)
    model.queue.zero_()
    model.enqueue(torch.full((2, 8), 1.0))
    model.enqueue(torch.full((2, 8), 2.0))
    assert int(model.queue_ptr) == 1  # the newest batch starts here (the ring is written backwards)
    model.enqueue(torch.arange(3.0, 6.0).unsqueeze(1).expand(3, 8))  # slots 3, 4 and 0 (wraps)
    assert int(model.queue_ptr) == 3
    assert model.queue[:, 0].tolist() == [
        5.0,
        2.0,
        2.0,
        3.0,
        4.0,
    ]  # one key of batch 1 is left; the other is gone
    # newest batch first, each batch in its own order: the original's cat([k, queue[:K-N]])
    assert model.ordered_queue()[:, 0].tolist() == [3.0, 4.0, 5.0, 2.0, 2.0]
    model.enqueue(torch.arange(7.0).unsqueeze(1).expand(7, 8))  # larger than the queue: its first 5
    assert model.ordered_queue()[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_momentum_update_blends_parameters_and_bn_buffers():
    model = tiny_moco(momentum=0.75)
    model.momentum_update(0.0)
    for key, value in model.encoder_q.state_dict().items():
        assert torch.equal(value, model.encoder_k.state_dict()[key]), key
    k_before = {k: v.clone() for k, v in model.encoder_k.state_dict().items()}
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(1.0)
        model.encoder_q.bn1.running_mean.add_(4.0)
        model.encoder_q.bn1.num_batches_tracked.add_(3)
    model.momentum_update()
    k_after = model.encoder_k.state_dict()
    q_state = model.encoder_q.state_dict()
    assert torch.allclose(
        k_after["conv1.weight"], 0.75 * k_before["conv1.weight"] + 0.25 * q_state["conv1.weight"]
    )
    assert torch.allclose(k_after["bn1.running_mean"], k_before["bn1.running_mean"] + 1.0)
    assert torch.allclose(k_after["fc.bias"], k_before["fc.bias"] + 0.25)
    assert int(k_after["bn1.num_batches_tracked"]) == int(q_state["bn1.num_batches_tracked"])
    assert all(not p.requires_grad for p in model.encoder_k.parameters())


def test_forward_gives_normalised_queries_and_keys_for_the_loss():
    model = tiny_moco()
    x = torch.randn(6, 3, 16, 16)
    q, k = model(x, x)
    assert q.shape == k.shape == (6, 8) and q.requires_grad and not k.requires_grad
    assert torch.allclose(q.norm(dim=1), torch.ones(6), atol=1e-5)
    assert torch.allclose(k.norm(dim=1), torch.ones(6), atol=1e-5)
    logits, labels = info_nce_logits(q, k, model.queue, model.temperature)
    assert logits.shape == (6, 1 + 10) and labels.tolist() == [0] * 6  # the positive, then the 10 queued keys


def test_fill_queue_takes_the_first_keys_in_collection_order_and_needs_enough_of_them():
    model = tiny_moco(num_keys=10)
    batches = [torch.randn(4, 3, 16, 16) for _ in range(3)]
    model.encoder_k.eval()  # BN from running statistics: a batch's keys do not depend on its neighbours
    model.fill_queue(iter(batches))
    expected = torch.cat([F.normalize(model.encoder_k(x), dim=1) for x in batches])[:10]
    assert torch.allclose(model.queue, expected, atol=1e-6) and int(model.queue_ptr) == 0
    with pytest.raises(ValueError, match="--num_keys 10"):
        model.fill_queue(iter(batches[:2]))


def test_single_process_shuffle_bn_restores_order_and_changes_statistics():
    """With split BN, shuffling mixes the sub-batches: the keys come back in input order, but differ from the
    unshuffled keys because each sub-batch is normalised with other samples' statistics."""
    model = tiny_moco(shuffle_bn=True, bn_splits=2)
    assert isinstance(model.encoder_k.bn1, SplitBatchNorm2d)
    x = torch.cat([torch.zeros(4, 3, 16, 16), torch.full((4, 3, 16, 16), 5.0)]) + 0.1 * torch.randn(
        8, 3, 16, 16
    )
    torch.manual_seed(3)
    perm = torch.randperm(8)
    torch.manual_seed(3)
    shuffled_keys = model.encode_keys(x)
    expected = F.normalize(model.encoder_k(x[perm]), dim=1)[torch.argsort(perm)]
    assert torch.allclose(shuffled_keys, expected, atol=1e-6)
    model.shuffle_bn = False
    plain_keys = model.encode_keys(x)
    assert not torch.allclose(shuffled_keys, plain_keys, atol=1e-3)


def test_shuffle_without_split_bn_is_a_no_op_on_one_device():
    model = tiny_moco(shuffle_bn=True, bn_splits=1)
    x = torch.randn(6, 3, 16, 16)
    shuffled = model.encode_keys(x)
    model.shuffle_bn = False
    assert torch.allclose(shuffled, model.encode_keys(x), atol=1e-5)
