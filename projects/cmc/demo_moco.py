"""``selfsup-demo --method cmc-moco``: the CMC repository's MoCo trainer on the embedded digits on CPU, then kNN
and linear evaluation of the pretrained encoder and of the same network at random initialisation, side by side.

``cmc-moco-ins-train --moco`` (``train_moco_ins.py``) with the repository's ``--aug CJ`` views at 16 px, a
CIFAR-stem ResNet-18, softmax cross-entropy against a queue smaller than the 1347 training images, and BN over
4 sub-batches per encoder (``--bn_splits 4``: the per-GPU BN of the original's 4-GPU DataParallel run, without
which shuffle BN changes nothing on one device and the key encoder's BN statistics give the task away). Writes
``OUTPUT/results.json`` and the run under ``OUTPUT/run/``; runs offline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from selfsup.cmc.cli import parse_moco_ins_args
from selfsup.cmc.model import build_cmc_model
from selfsup.cmc.train_moco_ins import run_name, train
from selfsup.shared.checkpoints.io import atomic_save
from selfsup.shared.evaluation import evaluate_checkpoint
from selfsup.shared.evaluation.comparison import comparison_demo_parser, format_comparison, write_comparison

TRAIN_FLAGS = [
    "--moco", "--model", "resnet18", "--cifar_stem", "--image_size", "16", "--crop", "0.3",
    "--softmax", "--nce_k", "256", "--nce_t", "0.2", "--alpha", "0.99", "--bn_splits", "4",
    "--batch_size", "64", "--learning_rate", "0.06", "--lr_decay_epochs", "1000",
    "--num_workers", "0", "--print_freq", "22", "--save_freq", "1000",
    "--precision", "auto", "--channels_last", "--no_tensorboard", "--no_progress",
]  # fmt: skip
#: Evaluation sees the 16 px and the ImageNet normalisation of pre-training.
EVAL = {"dataset": "digits", "resize": 16, "crop": 16, "normalization": "imagenet"}


def build_parser(prog: str = "selfsup-demo --method cmc-moco") -> argparse.ArgumentParser:
    return comparison_demo_parser(
        prog,
        "The CMC repository's MoCo trainer on the embedded digits on CPU, then kNN and linear "
        "evaluation of the pretrained encoder and of the same network at random initialisation, side by side.",
        epochs=40,
    )


def evaluate(checkpoint: Path, device: str, seed: int) -> dict[str, dict]:
    """kNN (InsDis: cosine, k 200, τ 0.07) and a linear probe on cached features, both on digits."""
    knn = evaluate_checkpoint("knn", checkpoint, preset="instdisc", device=device, **EVAL)
    linear = evaluate_checkpoint("linear", checkpoint, preset="quick", seed=seed, device=device, **EVAL)
    return {"knn": knn, "linear": linear}


def main(argv: list[str] | None = None, prog: str = "selfsup-demo --method cmc-moco") -> int:
    opts = build_parser(prog).parse_args(argv)
    # 2 cores: the augmentation is cheap next to this model (about 10 % of a core), so both threads go to the
    # model and the data is loaded in the main process (one thread and a loader worker: 1.4x slower here)
    torch.set_num_threads(2)
    out = Path(opts.output)
    started = time.perf_counter()
    flags = [
        *TRAIN_FLAGS,
        "--dataset",
        "digits",
        "--model_path",
        str(out / "run"),
        "--epochs",
        str(opts.epochs),
    ]
    flags += ["--seed", str(opts.seed), "--device", opts.device]
    args = parse_moco_ins_args(flags)
    run = Path(args.model_path) / run_name(args)
    if run.exists():
        shutil.rmtree(run)
    checkpoint = train(args, ["cmc-moco-ins-train", *flags])
    train_s = time.perf_counter() - started

    torch.manual_seed(opts.seed)
    random_model = build_cmc_model(args.model, feat_dim=args.feat_dim, cifar_stem=args.cifar_stem)
    random_path = out / "random_init.pth"
    atomic_save({"model": random_model.original_state_dict(), "opt": {}, "epoch": 0}, random_path)
    tic = time.perf_counter()
    results = {
        "pretrained": evaluate(checkpoint, opts.device, opts.seed),
        "random_init": evaluate(random_path, opts.device, opts.seed),
    }
    eval_s = time.perf_counter() - tic
    seconds = {"train": train_s, "evaluate": eval_s, "total": time.perf_counter() - started}
    payload = write_comparison(
        out / "results.json", results, seconds=seconds, checkpoint=str(checkpoint), train_flags=flags
    )
    precision = json.loads((run / "config.json").read_text()).get("precision_resolved", args.precision)
    title = (
        f"MoCo of the CMC repository on the embedded digits ({opts.epochs} epochs, 1347 train / 450 test "
        f"images at 16 px), ResNet-18, {precision}:"
    )
    print(format_comparison(title, payload["summary"], seconds))
    print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
