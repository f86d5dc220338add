"""Probes (CMC layers and pooling), colour views, feature extraction and the feature cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.shared.data.colorspace import ColorSpaceToTensor, rgb_to_lab, rgb_to_ycbcr
from selfsup.shared.evaluation.features import (
    FeatureCache,
    extract_features,
    features_with_cache,
    module_sha256,
)
from selfsup.shared.evaluation.probes import ChannelSlice, FeatureProbe
from selfsup.shared.models.alexnet import build_cmc_alexnet_half
from selfsup.shared.models.backbones import build_backbone
from selfsup.shared.models.two_stream import TwoStreamBackbone


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _tiny(seed: int = 0, in_channels: int = 3):
    torch.manual_seed(seed)
    return build_backbone("resnet18", width=4, cifar_stem=True, in_channels=in_channels).eval()


def test_cmc_resnet_layers_and_pooling():
    net = _tiny()
    x = torch.randn(2, 3, 32, 32)
    expected = {"1": 4 * 8 * 8, "2": 4 * 6 * 6, "3": 8 * 4 * 4, "4": 16 * 3 * 3, "5": 32 * 4 * 4, "6": 32}
    with torch.no_grad():
        for layer, dim in expected.items():
            assert FeatureProbe(net, layer).forward(x).shape == (2, dim), layer
        assert torch.equal(FeatureProbe(net, "6")(x), net.forward_features(x))
        stages = net.forward_stages(x)
        avg = torch.nn.functional.adaptive_avg_pool2d(stages["layer1"], 6).flatten(1)
        assert torch.allclose(FeatureProbe(net, "2")(x), avg)
        mx = torch.nn.functional.adaptive_max_pool2d(stages["layer1"], 6).flatten(1)
        assert torch.allclose(FeatureProbe(net, "2", pool="max")(x), mx)
    with pytest.raises(ValueError, match="--layer 9"):
        FeatureProbe(net, "9")


def test_cmc_alexnet_two_streams_layer5_concatenates_l_then_ab():
    torch.manual_seed(0)
    l_net, ab_net = build_cmc_alexnet_half(1).eval(), build_cmc_alexnet_half(2).eval()
    model = TwoStreamBackbone({"l_to_ab": l_net, "ab_to_l": ab_net}, [1, 2])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = FeatureProbe(model, "5", pool="max")(x)
        expected = torch.cat([l_net.forward_features(x[:, :1]), ab_net.forward_features(x[:, 1:])], 1)
        assert torch.equal(feats, expected)
        conv2 = FeatureProbe(model, "2", pool="max")
        assert conv2.pool_side == 6
        with pytest.raises(ValueError, match="input channels"):
            FeatureProbe(model, "5")(torch.randn(1, 4, 64, 64))
        single = FeatureProbe(ChannelSlice(ab_net, 1, 3), "5")(x)
        assert torch.equal(single, ab_net.forward_features(x[:, 1:]))


def test_colour_views_match_the_published_formulas():
    white = np.full((1, 1, 3), 255, dtype=np.uint8)
    black = np.zeros((1, 1, 3), dtype=np.uint8)
    red = np.array([[[255, 0, 0]]], dtype=np.uint8)
    assert rgb_to_lab(white)[0, 0] == pytest.approx([100.0, 0.0, 0.0], abs=0.01)
    assert rgb_to_lab(black)[0, 0] == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    assert rgb_to_lab(red)[0, 0] == pytest.approx([53.24, 80.09, 67.20], abs=0.02)  # sRGB red, D65
    assert rgb_to_ycbcr(white)[0, 0] == pytest.approx([235.0, 128.0, 128.0], abs=0.01)
    assert rgb_to_ycbcr(black)[0, 0] == pytest.approx([16.0, 128.0, 128.0])
    tensor = ColorSpaceToTensor("lab")(Image.fromarray(np.repeat(np.repeat(white, 4, 0), 4, 1)))
    assert tensor.shape == (3, 4, 4)
    assert tensor[:, 0, 0].tolist() == pytest.approx([1.0, -6.025 / 92.208, 6.6895 / 101.1675], abs=1e-4)


class _Items(torch.utils.data.Dataset):
    def __init__(self, n: int = 13) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 16, 16, generator=gen)
        self.y = torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_extract_features_in_order_and_in_eval_mode():
    net = _tiny()
    data = _Items()
    feats, labels = extract_features(FeatureProbe(net), data, batch_size=4)
    with torch.no_grad():
        assert torch.allclose(feats, net.eval().forward_features(data.x), atol=1e-6)
    assert labels.tolist() == data.y.tolist()
    net.train()
    extract_features(FeatureProbe(net), data, batch_size=4)
    assert net.training  # the caller's mode is restored


def test_cache_hit_and_invalidation_when_the_weights_change(tmp_path):
    data = _Items()
    cache = FeatureCache(tmp_path)
    net = _tiny(0)

    def meta_for(module):
        return {"weights_sha256": module_sha256(module), "dataset": "items", "split": "train", "n": len(data)}

    first, _, hit = features_with_cache(
        FeatureProbe(net), data, meta=meta_for(net), cache=cache, batch_size=8, device="cpu"
    )
    assert not hit and len(list(tmp_path.glob("*.pt"))) == 1
    again, labels, hit = features_with_cache(
        FeatureProbe(net), data, meta=meta_for(net), cache=cache, batch_size=8, device="cpu"
    )
    assert hit and torch.equal(first, again) and labels.tolist() == data.y.tolist()
    # Changing one weight changes the hash, so the cache misses and recomputes different features.
    with torch.no_grad():
        net.conv1.weight[0, 0, 0, 0] += 1.0
    changed_meta = meta_for(net)
    assert cache.key(changed_meta) != cache.key(meta_for(_tiny(0)))
    changed, _, hit = features_with_cache(
        FeatureProbe(net), data, meta=changed_meta, cache=cache, batch_size=8, device="cpu"
    )
    assert not hit and not torch.equal(changed, first)
    assert len(list(tmp_path.glob("*.pt"))) == 2
    # A file whose stored description differs (e.g. a hand-copied file) is not trusted.
    stale = cache.path(meta_for(_tiny(0)))
    stale.write_bytes(cache.path(changed_meta).read_bytes())
    assert cache.load(meta_for(_tiny(0))) is None


def test_module_hash_depends_on_buffers_too():
    a, b = _tiny(0), _tiny(0)
    assert module_sha256(a) == module_sha256(b)
    b.bn1.running_mean += 0.5
    assert module_sha256(a) != module_sha256(b)
