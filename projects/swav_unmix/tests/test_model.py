"""The SwAV network: shapes, the original key layout, grouped vs per-crop forwards, prototype normalisation."""

from __future__ import annotations

import pytest
import torch

from selfsup.shared.models.backbones import ARCHITECTURES, BackboneConfig, build_backbone
from selfsup.swav_unmix.model import SwAVModel, crop_groups

TINY = BackboneConfig(name="resnet18", width=8, cifar_stem=True)


def tiny(mode: str = "grouped", hidden: int = 32) -> SwAVModel:
    torch.manual_seed(0)
    return SwAVModel(TINY, hidden_mlp=hidden, feat_dim=16, nmb_prototypes=10, forward_mode=mode)


def crops(bs: int = 4) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(bs, 3, s, s, generator=gen) for s in (16, 16, 16, 8, 8)]


def test_crop_groups_are_runs_of_equal_sides() -> None:
    assert crop_groups(crops()) == [(0, 3), (3, 5)]
    x = crops()
    assert crop_groups([x[0], x[3], x[1]]) == [(0, 1), (1, 2), (2, 3)]  # not sorted: consecutive runs only


def test_outputs_unit_embeddings_and_prototype_scores_in_input_order() -> None:
    model = tiny().eval()
    x = crops()
    z, s = model(x)
    assert z.shape == (20, 16) and s.shape == (20, 10)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(20))
    torch.testing.assert_close(s, z @ model.prototypes.weight.t())
    z3, _ = model(x[3])  # crop 3 alone lands in rows 12..15
    torch.testing.assert_close(z[12:16], z3)


def test_grouped_and_per_crop_forwards_agree_in_eval_mode() -> None:
    grouped, per_crop = tiny("grouped").eval(), tiny("per_crop").eval()
    per_crop.load_state_dict(grouped.state_dict())
    for a, b in zip(grouped(crops()), per_crop(crops())):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_grouped_forward_normalises_each_resolution_group_together_in_train_mode() -> None:
    model = tiny("grouped").train()
    x = crops()
    features = model.forward_trunk(x)
    reference = tiny("grouped").train()
    expected = torch.cat([reference.backbone(torch.cat(x[:3])), reference.backbone(torch.cat(x[3:]))])
    torch.testing.assert_close(features, expected)


def test_original_state_dict_layout() -> None:
    model = tiny(hidden=32)
    keys = model.original_state_dict()
    assert all(k.startswith("module.") for k in keys)
    assert "module.conv1.weight" in keys and "module.layer4.1.bn2.running_var" in keys
    assert keys["module.projection_head.0.weight"].shape == (32, 64)
    assert "module.projection_head.1.running_mean" in keys
    assert keys["module.projection_head.3.weight"].shape == (16, 32)
    assert keys["module.prototypes.weight"].shape == (10, 16)
    assert not any(".fc." in k for k in keys)
    linear = tiny(hidden=0).original_state_dict()
    assert linear["module.projection_head.weight"].shape == (16, 64)


def test_resnet50_head_and_prototype_shapes_match_the_released_layout() -> None:
    model = SwAVModel(BackboneConfig(name="resnet50"), hidden_mlp=2048, feat_dim=128, nmb_prototypes=3000)
    keys = model.original_state_dict()
    assert keys["module.projection_head.0.weight"].shape == (2048, 2048)
    assert keys["module.projection_head.3.weight"].shape == (128, 2048)
    assert keys["module.prototypes.weight"].shape == (3000, 128)
    assert keys["module.conv1.weight"].shape == (64, 3, 7, 7)


@pytest.mark.parametrize(
    ("name", "features"), [("resnet50w2", 4096), ("resnet50w4", 8192), ("resnet50w5", 10240)]
)
def test_wide_resnets(name: str, features: int) -> None:
    block, layers, width = ARCHITECTURES[name]  # building them would take GBs; check the recipe
    assert layers == (3, 4, 6, 3) and width * 8 * block.expansion == features


def test_swav_stem_padding_equals_the_original_constant_pad() -> None:
    """``ConstantPad2d(1)`` + 3x3 conv with padding 1 (the Un-Mix CIFAR stem) = a 3x3 conv with padding 2."""
    net = build_backbone("resnet18_bottleneck", cifar_stem=True, stem_padding=2)
    x = torch.randn(2, 3, 8, 8)
    pad = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1)), net.conv1.weight, padding=1)
    torch.testing.assert_close(net.conv1(x), pad)
    assert net.feature_dim == 2048


def test_prototypes_are_renormalised_in_place() -> None:
    model = tiny()
    weight = model.prototypes.weight
    weight.data.mul_(3.0)
    model.normalize_prototypes()
    assert model.prototypes.weight is weight
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(10))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="--forward_mode"):
        SwAVModel(TINY, forward_mode="fast")
    with pytest.raises(ValueError, match="--nmb_prototypes"):
        SwAVModel(TINY, nmb_prototypes=0)
