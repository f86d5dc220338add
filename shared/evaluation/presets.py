"""Named evaluation presets: the exact protocol values of the papers' evaluation scripts.

Every preset is a frozen dataclass (:class:`LinearConfig`, :class:`SemisupConfig`, :class:`KnnConfig`) held in
one explicit registry per protocol (:data:`LINEAR_PRESETS`, :data:`SEMISUP_PRESETS`, :data:`KNN_PRESETS`). A
run's configuration is ``resolve_config(protocol, preset, dataset, **overrides)``: the preset, every override
given explicitly (flags with the original names map onto these fields in :mod:`.cli`), then the input size
rule.

Input size rule (for datasets other than the one a preset was written for): a preset lists ``sizes``, the
``(resize, crop)`` of the datasets its source script ran on (e.g. ``stl10 -> (84, 64)`` for the unofficial
MoCo, ``imagefolder -> (256, 224)`` for ImageNet protocols). For any other dataset ``crop`` is
``dataset_info(dataset).image_size`` and ``resize = round(crop * resize_ratio)``, where ``resize_ratio`` keeps
the preset's border fraction (84/64 for the unofficial MoCo, 256/224 for ImageNet protocols, 1 for kNN and the
feature-based presets). Explicit ``resize`` / ``crop`` overrides (``--resize``, ``--crop``) always win.

Sources of the values: ``/work/shared/specs`` ``moco.md`` §7 and §9, ``swav_unmix.md`` §7, ``intl.md`` §7 and
Appendix A, ``cmc.md`` §8; the table in ``docs/evaluation.md`` lists them per preset.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from selfsup.shared.evaluation.configs import (
    COLOR_SPACES,
    SCHEDULES,
    TRAIN_AUGS,
    KnnConfig,
    LinearConfig,
    SemisupConfig,
    config_to_dict,
    validate,
)

__all__ = [
    "COLOR_SPACES",
    "KNN_PRESETS",
    "LINEAR_PRESETS",
    "PRESETS",
    "SCHEDULES",
    "SEMISUP_PRESETS",
    "TRAIN_AUGS",
    "KnnConfig",
    "LinearConfig",
    "SemisupConfig",
    "config_to_dict",
    "default_preset",
    "resolve_config",
]

#: ``rrc_flip``: RandomResizedCrop(crop, scale (crop_low, 1)) + flip; ``crop_flip``: Resize(resize) +
#: RandomCrop(crop) + flip (unofficial MoCo); ``none``: the test transform (no train-time augmentation).
_EG_SOURCE = "eveningglow/MoCo test.py @cf55405 (specs/moco.md §7)"
_IMAGENET_SIZES = (("imagefolder", 256, 224),)
_IMAGENET_RATIO = 256 / 224

LINEAR_PRESETS: dict[str, LinearConfig] = {
    "moco_eveningglow": LinearConfig(
        preset="moco_eveningglow",
        source=_EG_SOURCE,
        sizes=(("stl10", 84, 64),),
        resize_ratio=84 / 64,
        train_aug="crop_flip",
        normalization="half",
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
        head_init="default",
    ),
    "moco_official": LinearConfig(
        preset="moco_official",
        source="facebookresearch/moco main_lincls.py via Un-Mix main_lincls_unmix.py (specs/moco.md §9)",
        sizes=_IMAGENET_SIZES,
        resize_ratio=_IMAGENET_RATIO,
        train_aug="rrc_flip",
        crop_low=0.08,
        normalization="imagenet",
        lr=30.0,
        weight_decay=0.0,
        batch_size=256,
        epochs=100,
        schedule="step",
        milestones=(60, 80),
        gamma=0.1,
        head_init="normal",
    ),
    "swav": LinearConfig(
        preset="swav",
        source="facebookresearch/swav eval_linear.py = Un-Mix UnMix_SwAV (specs/swav_unmix.md §7)",
        sizes=_IMAGENET_SIZES,
        resize_ratio=_IMAGENET_RATIO,
        train_aug="rrc_flip",
        crop_low=0.08,
        normalization="swav",
        lr=0.3,
        nesterov=False,
        weight_decay=1e-6,
        batch_size=256,
        epochs=100,
        schedule="cosine",
        final_lr=0.0,
        milestones=(60, 80),
        gamma=0.1,
        head_init="normal",
    ),
    "intl": LinearConfig(
        preset="intl",
        source="winci-ai/INTL evaluate.py --weights freeze (specs/intl.md §7.1)",
        sizes=_IMAGENET_SIZES,
        resize_ratio=_IMAGENET_RATIO,
        train_aug="rrc_flip",
        crop_low=0.08,
        normalization="imagenet",
        lr=0.2,
        lr_scale_batch=True,
        weight_decay=0.0,
        batch_size=256,
        epochs=100,
        schedule="step",
        milestones=(60, 80),
        gamma=0.1,
        head_init="normal",
    ),
    "intl_cifar": LinearConfig(
        preset="intl_cifar",
        source="winci-ai/INTL cifar/eval (W-MSE eval_sgd), winci-ai/CW-RGP (specs/intl.md §7.3, App. A)",
        sizes=(("cifar10", 32, 32), ("cifar100", 32, 32), ("stl10", 70, 64)),
        resize_ratio=1.0,
        train_aug="none",
        normalization="cifar10",
        use_cache=True,
        optimizer="adam",
        lr=1e-2,
        final_lr=1e-6,
        weight_decay=5e-6,
        batch_size=1000,
        test_batch_size=1000,
        epochs=500,
        schedule="exponential",
        eval_every=500,
        select="last",
    ),
    "cmc_alexnet": LinearConfig(
        preset="cmc_alexnet",
        source="HobbitLong/CMC LinearProbing.py --model alexnet --layer 5 (specs/cmc.md §8)",
        sizes=_IMAGENET_SIZES,
        resize_ratio=_IMAGENET_RATIO,
        train_aug="rrc_flip",
        crop_low=0.2,
        normalization="lab",
        color_space="lab",
        layer="5",
        pool="max",
        lr=0.1,
        weight_decay=0.0,
        batch_size=256,
        epochs=60,
        schedule="step",
        milestones=(30, 40, 50),
        gamma=0.2,
        head_init="normal",
    ),
    "cmc_resnet": LinearConfig(
        preset="cmc_resnet",
        source="HobbitLong/CMC LinearProbing.py --model resnet50v1/v2 --layer 6 (specs/cmc.md §8)",
        sizes=_IMAGENET_SIZES,
        resize_ratio=_IMAGENET_RATIO,
        train_aug="rrc_flip",
        crop_low=0.08,
        normalization="lab",
        color_space="lab",
        layer="6",
        pool="avg",
        lr=30.0,
        weight_decay=0.0,
        batch_size=256,
        epochs=60,
        schedule="step",
        milestones=(30, 40, 50),
        gamma=0.2,
        head_init="normal",
    ),
    "quick": LinearConfig(
        preset="quick",
        source="selfsup quick check: cached features, Adam (not a paper protocol)",
        resize_ratio=1.0,
        train_aug="none",
        normalization="dataset",
        use_cache=True,
        optimizer="adam",
        lr=1e-2,
        final_lr=1e-4,
        weight_decay=5e-6,
        batch_size=256,
        epochs=30,
        schedule="exponential",
        eval_every=1,
        select="last",
    ),
}
LINEAR_PRESETS["cmc_insdis"] = dataclasses.replace(
    LINEAR_PRESETS["cmc_alexnet"],
    preset="cmc_insdis",
    source="HobbitLong/CMC eval_moco_ins.py (InsDis/MoCo query encoder, --layer 6, --aug CJ; specs/cmc.md §8)",
    train_aug="rrc_cj_flip",
    normalization="imagenet",
    color_space="rgb",
    layer="6",
    pool="avg",
)
LINEAR_PRESETS["cmc_resnet50v3"] = dataclasses.replace(
    LINEAR_PRESETS["cmc_resnet"],
    preset="cmc_resnet50v3",
    source="HobbitLong/CMC LinearProbing.py --model resnet50v3 --layer 6 (specs/cmc.md §8)",
    lr=50.0,
)


def _swav_semisup(name: str, perc: float, lr: float, lr_last: float) -> SemisupConfig:
    return SemisupConfig(
        preset=name,
        source="facebookresearch/swav eval_semisup.py (specs/swav_unmix.md §7)",
        sizes=_IMAGENET_SIZES,
        resize_ratio=_IMAGENET_RATIO,
        train_aug="rrc_flip",
        crop_low=0.08,
        normalization="swav",
        labels_perc=perc,
        lr_backbone=lr,
        lr_head=lr_last,
        weight_decay=0.0,
        batch_size=256,
        epochs=20,
        schedule="step",
        milestones=(12, 16),
        gamma=0.2,
        head_init="default",
        sync_bn=True,
    )


def _intl_semisup(name: str, perc: float) -> SemisupConfig:
    return SemisupConfig(
        preset=name,
        source="winci-ai/INTL evaluate.py --weights finetune --train-percent (specs/intl.md §7.2)",
        sizes=_IMAGENET_SIZES,
        resize_ratio=_IMAGENET_RATIO,
        train_aug="rrc_flip",
        crop_low=0.08,
        normalization="imagenet",
        labels_perc=perc,
        lr_backbone=0.004,
        lr_head=0.2,
        lr_scale_batch=True,
        weight_decay=0.0,
        batch_size=256,
        epochs=20,
        schedule="step",
        milestones=(60, 80),
        gamma=0.1,
        head_init="normal",
        sync_bn=False,
    )


SEMISUP_PRESETS: dict[str, SemisupConfig] = {
    "swav_1pct": _swav_semisup("swav_1pct", 1.0, 0.02, 5.0),
    "swav_10pct": _swav_semisup("swav_10pct", 10.0, 0.01, 0.2),
    "intl_1pct": _intl_semisup("intl_1pct", 1.0),
    "intl_10pct": _intl_semisup("intl_10pct", 10.0),
}

KNN_PRESETS: dict[str, KnnConfig] = {
    "instdisc": KnnConfig(
        preset="instdisc",
        source="Wu et al. InsDis weighted kNN (zhirongw/lemniscate.pytorch): cosine, k 200, exp(s/0.07)",
        sizes=_IMAGENET_SIZES,
        resize_ratio=1.0,
        normalization="dataset",
        metric="cosine",
        k=200,
        temperature=0.07,
        vote="weighted",
    ),
    "lightly": KnnConfig(
        preset="lightly",
        source="lightly knn_predict / Un-Mix unmix_c10.py kNN monitor: cosine, k 200, exp(s/0.1)",
        sizes=_IMAGENET_SIZES,
        resize_ratio=1.0,
        normalization="dataset",
        metric="cosine",
        k=200,
        temperature=0.1,
        vote="weighted",
    ),
    "nn5": KnnConfig(
        preset="nn5",
        source="INTL cifar/eval, CW-RGP: Euclidean 5-NN majority vote (specs/intl.md §7.3, App. A)",
        sizes=(("cifar10", 32, 32), ("cifar100", 32, 32), ("stl10", 70, 64)),
        resize_ratio=1.0,
        normalization="dataset",
        metric="euclidean",
        k=5,
        vote="majority",
        test_batch_size=1000,
    ),
}

#: protocol -> its preset registry.
PRESETS: dict[str, dict[str, Any]] = {
    "linear": LINEAR_PRESETS,
    "semisup": SEMISUP_PRESETS,
    "knn": KNN_PRESETS,
}
_DEFAULT_PRESET = {"linear": "quick", "semisup": "swav_10pct", "knn": "instdisc"}


def default_preset(protocol: str) -> str:
    """The preset used when ``--preset`` is not given."""
    _check_protocol(protocol)
    return _DEFAULT_PRESET[protocol]


def _check_protocol(protocol: str) -> None:
    if protocol not in PRESETS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PRESETS)}")


def _tupleize(name: str, value: Any) -> Any:
    if name == "milestones" and value is not None:
        return tuple(int(v) for v in value)
    if name == "sizes" and value is not None:
        return tuple((str(d), int(r), int(c)) for d, r, c in value)
    return value


def resolve_config(protocol: str, preset: str | None, dataset: str, **overrides: Any) -> Any:
    """The preset of ``protocol`` named ``preset`` (default :func:`default_preset`), with ``overrides``
    applied (``None`` values are ignored) and ``resize``/``crop`` filled by the input size rule."""
    from selfsup.shared.data import dataset_info

    _check_protocol(protocol)
    registry = PRESETS[protocol]
    name = preset or default_preset(protocol)
    if name not in registry:
        raise ValueError(
            f"--preset {name!r} is not a {protocol} preset; known: {', '.join(sorted(registry))}"
        )
    base = registry[name]
    fields = {f.name for f in dataclasses.fields(base)}
    given = {key: _tupleize(key, value) for key, value in overrides.items() if value is not None}
    unknown = sorted(set(given) - fields)
    if unknown:
        raise TypeError(f"unknown {protocol} option(s) {unknown}; known: {', '.join(sorted(fields))}")
    config = dataclasses.replace(base, **given)
    if config.resize is None or config.crop is None:
        native = {d: (r, c) for d, r, c in config.sizes}
        if dataset in native:
            resize, crop = native[dataset]
        else:
            crop = dataset_info(dataset).image_size
            resize = max(crop, round(crop * config.resize_ratio))
        if config.crop is not None:
            crop = config.crop
            resize = max(crop, round(crop * config.resize_ratio))
        config = dataclasses.replace(config, resize=config.resize or resize, crop=crop)
    if isinstance(config, LinearConfig) and config.use_cache and config.train_aug != "none":
        # The cached path trains on features of the test transform: record that honestly.
        config = dataclasses.replace(config, train_aug="none")
    validate(config)
    return config
