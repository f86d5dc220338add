"""Tests of selfsup.shared.models.split_batchnorm: split BN against per-chunk F.batch_norm, running stats, conversion."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.shared.models.backbones import build_backbone
from selfsup.shared.models.split_batchnorm import SplitBatchNorm1d, SplitBatchNorm2d, convert_split_batchnorm


def _ordered_batch(n: int, c: int = 3, hw: int = 2) -> torch.Tensor:
    """A batch whose per-sample offset grows with the index, so chunks have very different statistics."""
    gen = torch.Generator().manual_seed(0)
    offsets = torch.linspace(-5.0, 5.0, n).view(n, 1, 1, 1)
    return torch.randn(n, c, hw, hw, generator=gen) + offsets


def _randomise_affine(bn: nn.modules.batchnorm._BatchNorm) -> None:
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)


def test_split_bn2d_matches_per_chunk_batch_norm_with_dataparallel_chunk_sizes() -> None:
    x = _ordered_batch(256)
    bn = SplitBatchNorm2d(3, num_splits=6)
    _randomise_affine(bn)
    out = bn(x)
    # nn.DataParallel scatters 256 samples over 6 devices as 43, 43, 43, 43, 42, 42.
    chunks = torch.split(x, [43, 43, 43, 43, 42, 42])
    expected = torch.cat([F.batch_norm(c, None, None, bn.weight, bn.bias, True, 0.0, bn.eps) for c in chunks])
    torch.testing.assert_close(out, expected)
    plain = F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    assert (out - plain).abs().max() > 0.5


def test_split_bn_gradients_match_per_chunk_reference() -> None:
    x = _ordered_batch(10).requires_grad_(True)
    bn = SplitBatchNorm2d(3, num_splits=3)
    _randomise_affine(bn)
    (bn(x).pow(2) * torch.arange(10.0).view(10, 1, 1, 1)).sum().backward()
    x_ref = x.detach().clone().requires_grad_(True)
    w_ref = bn.weight.detach().clone().requires_grad_(True)
    b_ref = bn.bias.detach().clone().requires_grad_(True)
    chunks = torch.tensor_split(x_ref, 3)
    ref = torch.cat([F.batch_norm(c, None, None, w_ref, b_ref, True, 0.0, bn.eps) for c in chunks])
    (ref.pow(2) * torch.arange(10.0).view(10, 1, 1, 1)).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(bn.weight.grad, w_ref.grad)
    torch.testing.assert_close(bn.bias.grad, b_ref.grad)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_stats_follow_chunk_zero_only(momentum: float | None) -> None:
    x1, x2 = _ordered_batch(12), _ordered_batch(12) * 2 + 1
    split = SplitBatchNorm2d(3, num_splits=4, momentum=momentum)
    reference = nn.BatchNorm2d(3, momentum=momentum)
    for x in (x1, x2):
        split(x)
        reference(torch.tensor_split(x, 4)[0])  # replica 0 of nn.DataParallel sees chunk 0
    torch.testing.assert_close(split.running_mean, reference.running_mean)
    torch.testing.assert_close(split.running_var, reference.running_var)
    assert split.num_batches_tracked.item() == reference.num_batches_tracked.item() == 2
    full = nn.BatchNorm2d(3, momentum=momentum)
    full(x1)
    full(x2)
    assert not torch.allclose(split.running_mean, full.running_mean)


def test_eval_mode_is_plain_batch_norm() -> None:
    split = SplitBatchNorm2d(3, num_splits=4)
    _randomise_affine(split)
    split(_ordered_batch(16))  # give it non-trivial running stats
    plain = nn.BatchNorm2d(3)
    plain.load_state_dict(split.state_dict())
    split.eval()
    plain.eval()
    x = _ordered_batch(8)
    torch.testing.assert_close(split(x), plain(x))


def test_state_dict_keys_equal_batchnorm_and_load_both_ways() -> None:
    split1d, plain1d = SplitBatchNorm1d(4, num_splits=2), nn.BatchNorm1d(4)
    split2d, plain2d = SplitBatchNorm2d(4, num_splits=2), nn.BatchNorm2d(4)
    assert list(split1d.state_dict()) == list(plain1d.state_dict())
    assert list(split2d.state_dict()) == list(plain2d.state_dict())
    _randomise_affine(plain2d)
    split2d.load_state_dict(plain2d.state_dict())
    assert torch.equal(split2d.weight, plain2d.weight)
    assert "num_splits=2" in repr(split2d)


def test_split_bn1d_matches_per_chunk_reference() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, 5, generator=gen) + torch.linspace(0, 8, 20).view(20, 1)
    bn = SplitBatchNorm1d(5, num_splits=3)  # 7, 7, 6
    out = bn(x)
    expected = torch.cat(
        [
            F.batch_norm(c, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
            for c in torch.split(x, [7, 7, 6])
        ]
    )
    torch.testing.assert_close(out, expected)


def test_batch_smaller_than_num_splits_uses_one_chunk_per_sample() -> None:
    x = _ordered_batch(3)
    bn = SplitBatchNorm2d(3, num_splits=8)
    expected = torch.cat([F.batch_norm(x[i : i + 1], None, None, bn.weight, bn.bias, True) for i in range(3)])
    torch.testing.assert_close(bn(x), expected)
    with pytest.raises(ValueError, match="num_splits=8"):
        SplitBatchNorm1d(3, num_splits=8)(torch.randn(3, 3))  # one value per channel per chunk


def test_track_running_stats_false_splits_in_eval_too() -> None:
    x = _ordered_batch(8)
    bn = SplitBatchNorm2d(3, num_splits=2, track_running_stats=False).eval()
    expected = torch.cat([F.batch_norm(c, None, None, bn.weight, bn.bias, True) for c in x.chunk(2)])
    torch.testing.assert_close(bn(x), expected)


def test_invalid_num_splits() -> None:
    with pytest.raises(ValueError, match="num_splits"):
        SplitBatchNorm2d(3, num_splits=0)
    with pytest.raises(ValueError, match="num_splits"):
        convert_split_batchnorm(nn.BatchNorm2d(3), 0)


def test_deepcopy_keeps_behaviour() -> None:
    bn = SplitBatchNorm2d(3, num_splits=4)
    _randomise_affine(bn)
    clone = copy.deepcopy(bn)
    assert clone.num_splits == 4 and clone.weight is not bn.weight
    x = _ordered_batch(16)
    torch.testing.assert_close(clone(x), bn(x))


@pytest.mark.parametrize(("arch", "width"), [("resnet18", 8), ("resnet50", 4)])
def test_convert_backbone_keeps_state_and_trains(arch: str, width: int) -> None:
    torch.manual_seed(0)
    model = build_backbone(arch, width=width, cifar_stem=True)
    model.bn1.weight.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            _randomise_affine(m)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 3, 16, 16)
    model.eval()
    eval_before = model(x)

    converted = convert_split_batchnorm(model, num_splits=2)
    bns = [m for m in converted.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(type(m) is SplitBatchNorm2d and m.num_splits == 2 for m in bns)
    after = converted.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not converted.bn1.weight.requires_grad and converted.bn1.bias.requires_grad
    torch.testing.assert_close(converted(x), eval_before)  # eval mode: plain BN, same parameters

    converted.train()
    converted(x).pow(2).mean().backward()
    assert converted.layer1[0].bn1.weight.grad is not None and converted.bn1.weight.grad is None
    assert converted.bn1.num_batches_tracked.item() == 1
    # The split forward differs from a plain-BN forward of the same weights on the same batch.
    plain = copy.deepcopy(converted)
    for m in plain.modules():
        if isinstance(m, SplitBatchNorm2d):
            m.num_splits = 1
    assert not torch.allclose(plain(x), converted(x))


def test_convert_handles_bn1d_and_is_noop_for_one_split() -> None:
    head = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.BatchNorm2d(2))
    assert convert_split_batchnorm(head, 1) is head and type(head[1]) is nn.BatchNorm1d
    converted = convert_split_batchnorm(head, 3)
    assert converted is head
    assert type(head[1]) is SplitBatchNorm1d and type(head[3]) is SplitBatchNorm2d
    standalone = convert_split_batchnorm(nn.BatchNorm1d(6).eval(), 3)
    assert type(standalone) is SplitBatchNorm1d and not standalone.training
