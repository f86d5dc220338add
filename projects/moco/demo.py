"""``moco-demo``: MoCo pre-training on the embedded digits on CPU, then kNN and linear evaluation of the
pretrained encoder and of the same network at its random initialisation, side by side.

Writes ``OUTPUT/results.json`` (all numbers, timings and the settings used), ``OUTPUT/loss.png`` and the
training run (checkpoints, CSV log, config) under ``OUTPUT/run/``. Runs offline: the data ship with
scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from selfsup.moco.cli import parse_args
from selfsup.moco.train import backbone_config, input_normalization, run_dir, train
from selfsup.shared.checkpoints.formats import load_backbone
from selfsup.shared.evaluation import run_knn, run_linear
from selfsup.shared.evaluation.comparison import comparison_demo_parser, format_comparison, write_comparison
from selfsup.shared.models.backbones import build_backbone_from_config

#: The demo's pre-training recipe. Digits are 8x8 images upscaled, so 16 px crops lose nothing and train 4x
#: faster than 32 px; crops keep at least 30 % of the image (an 8 % crop would hold one or two original
#: pixels). MoCo v2's augmentation, MLP head and temperature learn fastest here (a constant lr did better
#: than --cos in our short runs); a queue smaller than the 1347-image training set keeps few of the batch's own images among the negatives; shuffle
#: BN over 4 sub-batches (the M3 setting, emulated on one device) stops the BN shortcut. A narrow ResNet-18
#: (width 16) in bf16 where the CPU computes it fast (``--precision auto``) and channels-last trains 100 epochs
#: in about two and a half minutes on a 2-core CPU.
TRAIN_FLAGS = [
    "--dataset", "digits", "--arch", "resnet18", "--width", "16", "--cifar_stem",
    "--crop", "16", "--crop-min", "0.3", "--aug-plus",
    "--batch_size", "64", "--num_keys", "256", "--momentum", "0.99", "--temperature", "0.2", "--lr", "0.1",
    "--mlp", "--shuffle_bn", "--bn_splits", "4", "--precision", "auto", "--channels_last",
    "--num_workers", "1", "--save_weight_epoch", "10", "--log_every", "22",
    "--dataset_name", "DIGITS", "--exp_version", "demo", "--no_tensorboard", "--no_progress",
]  # fmt: skip
#: Evaluation sees the 16 px of pre-training (and, below, its input normalisation).
EVAL_SIZE = {"resize": 16, "crop": 16}


def build_parser(prog: str = "moco-demo") -> argparse.ArgumentParser:
    return comparison_demo_parser(
        prog,
        "MoCo pre-training on the embedded digits on CPU, then kNN and linear evaluation of the "
        "pretrained encoder and of the same network at its random initialisation, side by side.",
        epochs=100,
        output_help="folder for results.json, loss.png and run/",
    )


def evaluate(backbone: torch.nn.Module, device: str, seed: int, normalization: str) -> dict[str, dict]:
    """kNN (InsDis: cosine, k 200, τ 0.07) and a linear probe on cached features, both on digits."""
    common = {"dataset": "digits", "device": device, "normalization": normalization, **EVAL_SIZE}
    knn = run_knn(backbone, preset="instdisc", **common)
    linear = run_linear(backbone, preset="quick", seed=seed, **common)
    return {"knn": knn, "linear": linear}


def main(argv: list[str] | None = None, prog: str = "moco-demo") -> int:
    opts = build_parser(prog).parse_args(argv)
    # 2 cores: one for the model, one for the data-loading worker (oversubscribed threads run far slower)
    torch.set_num_threads(1)
    out = Path(opts.output)
    started = time.perf_counter()
    flags = [*TRAIN_FLAGS, "--output_root", str(out / "run"), "--max_epoch", str(opts.epochs)]
    flags += ["--seed", str(opts.seed), "--device", opts.device]
    args = parse_args(flags)
    if run_dir(args).exists():
        shutil.rmtree(run_dir(args))
    checkpoint = train(args, ["moco-train", *flags])
    train_s = time.perf_counter() - started

    pretrained, report = load_backbone(checkpoint)
    torch.manual_seed(opts.seed)
    random_init = build_backbone_from_config(backbone_config(args))
    tic = time.perf_counter()
    normalization = input_normalization(args.aug_plus)
    results = {"pretrained": evaluate(pretrained, opts.device, opts.seed, normalization)}
    results["random_init"] = evaluate(random_init, opts.device, opts.seed, normalization)
    eval_s = time.perf_counter() - tic

    loss_png = out / "loss.png"
    shutil.copyfile(run_dir(args) / "loss" / "loss.png", loss_png)
    seconds = {"train": train_s, "evaluate": eval_s, "total": time.perf_counter() - started}
    payload = write_comparison(
        out / "results.json",
        results,
        seconds=seconds,
        checkpoint=str(checkpoint),
        checkpoint_format=report.format,
        train_flags=flags,
    )
    precision = json.loads((run_dir(args) / "config.json").read_text()).get(
        "precision_resolved", args.precision
    )
    title = (
        f"MoCo v2 on the embedded digits ({opts.epochs} epochs, 1347 train / 450 test images at 16 px), "
        f"ResNet-18 width 16, {precision}:"
    )
    print(format_comparison(title, payload["summary"], seconds))
    print(f"wrote {out / 'results.json'} and {loss_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
