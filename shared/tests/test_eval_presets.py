"""Preset values against the specs, the input-size rule, schedules and the CLI's original flag spellings."""

from __future__ import annotations

import dataclasses

import pytest

from selfsup.shared.evaluation.cli import _NOT_OVERRIDES, build_parser, overrides_from_args
from selfsup.shared.evaluation.inputs import build_transforms
from selfsup.shared.evaluation.presets import (
    KNN_PRESETS,
    LINEAR_PRESETS,
    SEMISUP_PRESETS,
    config_to_dict,
    resolve_config,
)
from selfsup.shared.evaluation.probe_training import lr_for_epoch, select_epoch, should_evaluate

# (preset, field, value, spec reference) - each value read from /work/shared/specs.
LINEAR_EXPECTED = {
    # moco.md §7: lr 10, momentum 0.9, wd 0, batch 256 (test 100), 100 epochs, 10*0.2^floor(e/20),
    # eval every 2 epochs, max over evaluated epochs, Resize 84 / crop 64, mean/std 0.5, default Linear init.
    "moco_eveningglow": dict(
        lr=10.0,
        momentum=0.9,
        weight_decay=0.0,
        batch_size=256,
        test_batch_size=100,
        epochs=100,
        schedule="eveningglow",
        gamma=0.2,
        eval_every=2,
        select="max",
        train_aug="crop_flip",
        normalization="half",
        head_init="default",
        sizes=(("stl10", 84, 64),),
        bn_train_mode=False,
    ),
    # moco.md §9: ImageNet, lr 30, 100 epochs, steps 60/80, wd 0 (main_lincls: fc ~ N(0, 0.01)).
    "moco_official": dict(
        lr=30.0,
        epochs=100,
        schedule="step",
        milestones=(60, 80),
        gamma=0.1,
        weight_decay=0.0,
        batch_size=256,
        momentum=0.9,
        train_aug="rrc_flip",
        crop_low=0.08,
        normalization="imagenet",
        sizes=(("imagefolder", 256, 224),),
        head_init="normal",
    ),
    # swav_unmix.md §7: SGD lr 0.3, momentum 0.9, nesterov False, wd 1e-6, cosine to final_lr 0 over 100
    # epochs, 32 x 8 = 256, RRC 224 + flip, Resize 256 / CenterCrop 224, std 0.228, weight ~ N(0, 0.01).
    "swav": dict(
        lr=0.3,
        momentum=0.9,
        nesterov=False,
        weight_decay=1e-6,
        schedule="cosine",
        final_lr=0.0,
        epochs=100,
        batch_size=256,
        train_aug="rrc_flip",
        normalization="swav",
        sizes=(("imagefolder", 256, 224),),
        head_init="normal",
        select="max",
    ),
    # intl.md §7.1: lr-classifier 0.2 x bs/256, wd 0, momentum 0.9, step [60, 80] x0.1, 100 epochs.
    "intl": dict(
        lr=0.2,
        lr_scale_batch=True,
        weight_decay=0.0,
        momentum=0.9,
        schedule="step",
        milestones=(60, 80),
        gamma=0.1,
        epochs=100,
        batch_size=256,
        train_aug="rrc_flip",
        normalization="imagenet",
        head_init="normal",
    ),
    # intl.md §7.3: Adam lr 1e-2 -> 1e-6 exponential over 500 epochs, wd 5e-6, batches of 1000, cached.
    "intl_cifar": dict(
        optimizer="adam",
        lr=1e-2,
        final_lr=1e-6,
        schedule="exponential",
        epochs=500,
        weight_decay=5e-6,
        batch_size=1000,
        use_cache=True,
        train_aug="none",
        normalization="cifar10",
        select="last",
    ),
    # cmc.md §8: AlexNet --learning_rate 0.1 --layer 5 (max pooling); 60 epochs, decay 30,40,50 x0.2, wd 0,
    # momentum 0.9, bs 256, crop_low 0.2, Lab view.
    "cmc_alexnet": dict(
        lr=0.1,
        layer="5",
        pool="max",
        epochs=60,
        milestones=(30, 40, 50),
        gamma=0.2,
        weight_decay=0.0,
        momentum=0.9,
        batch_size=256,
        crop_low=0.2,
        color_space="lab",
        normalization="lab",
    ),
    # cmc.md §8: resnet50v1/v2 --learning_rate 30 --layer 6 (avg); v3 lr 50; crop_low 0.08 on ImageNet.
    "cmc_resnet": dict(lr=30.0, layer="6", pool="avg", epochs=60, milestones=(30, 40, 50), gamma=0.2),
    "cmc_resnet50v3": dict(lr=50.0, layer="6", crop_low=0.08, color_space="lab"),
    # cmc.md §8: eval_moco_ins.py: same defaults (60 ep, lr 0.1, decay 30/40/50 x0.2, wd 0, bs 256, layer 6)
    # plus --aug CJ (grayscale 0.2 + jitter 0.4) while training the classifier, crop 0.2, ImageNet mean/std.
    "cmc_insdis": dict(
        lr=0.1,
        layer="6",
        epochs=60,
        milestones=(30, 40, 50),
        gamma=0.2,
        weight_decay=0.0,
        batch_size=256,
        crop_low=0.2,
        train_aug="rrc_cj_flip",
        color_space="rgb",
        normalization="imagenet",
    ),
    "quick": dict(use_cache=True, train_aug="none", optimizer="adam", normalization="dataset"),
}

SEMISUP_EXPECTED = {
    # swav_unmix.md §7: 1 % -> lr 0.02 / head 5; 10 % -> 0.01 / 0.2; 20 epochs, decay 12 16 x0.2, wd 0.
    "swav_1pct": dict(
        labels_perc=1.0, lr_backbone=0.02, lr_head=5.0, epochs=20, milestones=(12, 16), gamma=0.2
    ),
    "swav_10pct": dict(labels_perc=10.0, lr_backbone=0.01, lr_head=0.2, weight_decay=0.0, sync_bn=True),
    # intl.md §7.2: lr-backbone 0.004, lr-classifier 0.2, x bs/256, wd 0, 20 epochs, step [60, 80] (constant).
    "intl_1pct": dict(labels_perc=1.0, lr_backbone=0.004, lr_head=0.2, lr_scale_batch=True, epochs=20),
    "intl_10pct": dict(labels_perc=10.0, milestones=(60, 80), weight_decay=0.0, sync_bn=False),
}

KNN_EXPECTED = {
    "instdisc": dict(metric="cosine", k=200, temperature=0.07, vote="weighted"),
    "lightly": dict(metric="cosine", k=200, temperature=0.1, vote="weighted"),
    "nn5": dict(
        metric="euclidean",
        k=5,
        vote="majority",
        sizes=(("cifar10", 32, 32), ("cifar100", 32, 32), ("stl10", 70, 64)),
    ),
}


@pytest.mark.parametrize(
    ("registry", "expected"),
    [(LINEAR_PRESETS, LINEAR_EXPECTED), (SEMISUP_PRESETS, SEMISUP_EXPECTED), (KNN_PRESETS, KNN_EXPECTED)],
)
def test_preset_values_match_the_specs(registry, expected):
    assert set(expected) <= set(registry)
    for name, fields in expected.items():
        preset = registry[name]
        assert preset.preset == name
        assert preset.source, f"{name} must name its source script"
        for field, value in fields.items():
            assert getattr(preset, field) == value, f"{name}.{field}"


def test_swav_uses_the_0228_std_and_official_moco_the_0229():
    swav = resolve_config("linear", "swav", "imagefolder")
    official = resolve_config("linear", "moco_official", "imagefolder")
    assert build_transforms(swav, "imagefolder")[2]["std"][0] == 0.228
    assert build_transforms(official, "imagefolder")[2]["std"][0] == 0.229


def test_input_size_rule():
    native = resolve_config("linear", "moco_eveningglow", "stl10")
    assert (native.resize, native.crop) == (84, 64)
    # digits is 32 px: crop = image size, resize keeps the preset's 84/64 border.
    digits = resolve_config("linear", "moco_eveningglow", "digits")
    assert (digits.resize, digits.crop) == (42, 32)
    imagenet = resolve_config("linear", "moco_official", "imagefolder")
    assert (imagenet.resize, imagenet.crop) == (256, 224)
    assert (resolve_config("linear", "moco_official", "cifar10").resize) == round(32 * 256 / 224)
    assert (resolve_config("knn", "nn5", "stl10").resize, resolve_config("knn", "nn5", "stl10").crop) == (
        70,
        64,
    )
    assert (resolve_config("knn", "instdisc", "digits").resize) == 32
    explicit = resolve_config("linear", "moco_eveningglow", "digits", crop=16)
    assert (explicit.resize, explicit.crop) == (21, 16)
    both = resolve_config("linear", "moco_official", "imagefolder", resize=100, crop=96)
    assert (both.resize, both.crop) == (100, 96)


def test_overrides_and_validation():
    config = resolve_config("linear", "moco_eveningglow", "stl10", lr=3.0, bn_train_mode=True, epochs=None)
    assert config.lr == 3.0 and config.bn_train_mode and config.epochs == 100
    cached = resolve_config("linear", "moco_eveningglow", "stl10", use_cache=True)
    assert cached.train_aug == "none"  # the cached path has no train-time augmentation, and says so
    with pytest.raises(ValueError, match="bn_train_mode"):
        resolve_config("linear", "moco_eveningglow", "stl10", use_cache=True, bn_train_mode=True)
    with pytest.raises(ValueError, match="--preset 'nope'"):
        resolve_config("linear", "nope", "digits")
    with pytest.raises(TypeError, match="unknown linear option"):
        resolve_config("linear", "quick", "digits", learning_rate=1.0)
    with pytest.raises(ValueError, match="--schedule"):
        resolve_config("linear", "quick", "digits", schedule="weird")
    assert config_to_dict(config)["sizes"] == [["stl10", 84, 64]]


def test_eveningglow_schedule_and_evaluation_epochs():
    config = LINEAR_PRESETS["moco_eveningglow"]
    rates = [lr_for_epoch(config, 10.0, e) for e in range(1, 101)]
    assert rates[0] == rates[19] == 10.0
    assert rates[20] == pytest.approx(2.0) and rates[39] == pytest.approx(2.0)
    assert rates[40] == pytest.approx(0.4) and rates[99] == pytest.approx(10 * 0.2**4)
    evaluated = [e for e in range(1, 101) if should_evaluate(e, 100, config.eval_every)]
    assert evaluated[:3] == [1, 3, 5] and evaluated[-2:] == [99, 100] and len(evaluated) == 51


def test_step_cosine_exponential_schedules():
    official = LINEAR_PRESETS["moco_official"]
    assert lr_for_epoch(official, 30.0, 60) == 30.0  # 0-based epoch 59
    assert lr_for_epoch(official, 30.0, 61) == pytest.approx(3.0)
    assert lr_for_epoch(official, 30.0, 81) == pytest.approx(0.3)
    cmc = LINEAR_PRESETS["cmc_resnet"]  # CMC decays when epoch (1-based) > milestone
    assert lr_for_epoch(cmc, 30.0, 30) == 30.0 and lr_for_epoch(cmc, 30.0, 31) == pytest.approx(6.0)
    swav = LINEAR_PRESETS["swav"]
    assert lr_for_epoch(swav, 0.3, 1) == pytest.approx(0.3)
    assert lr_for_epoch(swav, 0.3, 51) == pytest.approx(0.15)
    intl_cifar = LINEAR_PRESETS["intl_cifar"]
    assert lr_for_epoch(intl_cifar, 1e-2, 251) == pytest.approx(1e-4)
    semi = SEMISUP_PRESETS["intl_10pct"]
    assert {lr_for_epoch(semi, 0.004, e) for e in range(1, 21)} == {0.004}  # milestones 60/80 never reached


def test_select_epoch():
    curve = [
        {"epoch": 1, "top1": 50.0, "top5": 90.0},
        {"epoch": 2, "top1": None, "top5": None},
        {"epoch": 3, "top1": 70.0, "top5": 91.0},
        {"epoch": 4, "top1": 70.0, "top5": 99.0},
        {"epoch": 5, "top1": 60.0, "top5": 95.0},
    ]
    assert select_epoch(curve, "max")["epoch"] == 3  # ties keep the earliest
    assert select_epoch(curve, "last")["epoch"] == 5
    assert select_epoch([], "max") is None


def _parse(*argv: str) -> dict:
    return overrides_from_args(build_parser().parse_args(list(argv)))


def test_cli_accepts_the_original_flag_names():
    base = ("--checkpoint", "c.pth", "--output", "r.json")
    eg = _parse(
        "linear",
        *base,
        "--SGD_momentum",
        "0.8",
        "--max_epoch",
        "7",
        "--trn_batch_size",
        "64",
        "--tst_batch_size",
        "10",
        "--eval_epoch",
        "3",
    )
    assert eg == dict(momentum=0.8, epochs=7, batch_size=64, test_batch_size=10, eval_every=3)
    intl = _parse("linear", *base, "--lr-classifier", "0.4", "--schedule", "cos", "--bs", "512")
    assert intl == dict(lr=0.4, schedule="cosine", batch_size=512)
    moco = _parse("linear", *base, "--schedule", "60", "80", "--batch-size", "256", "--wd", "0")
    assert moco == dict(schedule="step", milestones=[60, 80], batch_size=256, weight_decay=0.0)
    cmc = _parse("linear", *base, "--learning_rate", "30", "--lr_decay_epochs", "30,40,50", "--layer", "6")
    assert cmc == dict(lr=30.0, milestones=[30, 40, 50], layer="6")
    swav = _parse("linear", *base, "--scheduler_type", "step", "--decay_epochs", "60", "80", "--nesterov")
    assert swav == dict(schedule="step", milestones=[60, 80], nesterov=True)
    semi = _parse("semisup", *base, "--labels_perc", "1", "--lr", "0.02", "--lr_last_layer", "5")
    assert semi == dict(labels_perc=1.0, lr_backbone=0.02, lr_head=5.0)
    intl_semi = _parse(
        "semisup", *base, "--train-percent", "10", "--lr-backbone", "0.004", "--lr-classifier", "0.2"
    )
    assert intl_semi == dict(labels_perc=10.0, lr_backbone=0.004, lr_head=0.2)
    knn = _parse("knn", *base, "--knn_k", "20", "--knn_t", "0.1", "--no-use_cache")
    assert knn == dict(k=20, temperature=0.1, use_cache=False)
    assert _parse("linear", *base, "--bn_train_mode") == dict(bn_train_mode=True)
    # Every flag that is not a run option maps onto a field of the protocol's config.
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    for protocol in ("linear", "semisup", "knn"):
        fields = {f.name for f in dataclasses.fields(type(resolve_config(protocol, None, "digits")))}
        dests = {action.dest for action in subcommands[protocol]._actions} - {"help"} - _NOT_OVERRIDES
        assert dests <= fields, f"{protocol}: flags without a config field: {sorted(dests - fields)}"
