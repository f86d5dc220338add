"""``selfsup-demo --method intl`` and ``selfsup-demo --method cwrgp``: INTL (``intl-train``) or CW-RGP
(``cwrgp-train``) pre-trained on the embedded digits on CPU, then kNN and linear evaluation of the pretrained
trunk and of the same network at random initialisation, side by side.

Each trainer runs with its original flags (:data:`INTL_FLAGS`, :data:`CWRGP_FLAGS`) on the 1347 training digits.
The random-init checkpoint is the trained one with the trainer's network, freshly initialised, in its
``state_dict`` (epoch 0, no optimiser state), so ``selfsup-eval`` reads both files the same way. Writes
``OUTPUT/results.json`` and the run (checkpoints, ``config.json``, ``log.csv``) under ``OUTPUT/run/``; runs
offline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selfsup.intl import cli as intl_cli
from selfsup.intl import cwrgp_cli, cwrgp_train
from selfsup.intl import train as intl_train
from selfsup.shared.checkpoints.io import atomic_save, load_training_checkpoint
from selfsup.shared.evaluation import evaluate_checkpoint
from selfsup.shared.evaluation.comparison import comparison_demo_parser, format_comparison, write_comparison

__all__ = ["CWRGP_FLAGS", "INTL_FLAGS", "RECIPES", "main", "main_cwrgp", "main_intl", "run_demo"]

#: ``intl-train --method intl``: two 16 px crops (scale 0.2-1, blur 0.5, no solarisation: digits are 8x8 images
#: upscaled, so 16 px loses nothing and trains 4x faster than 32 px), a CIFAR-stem ResNet-18 of width 16, a
#: 256-256-256 projector, IterNorm with 4 iterations over the per-sample axis (β from the batch of 64: 0.03), SGD
#: at 0.5 x 64/256 with 2 warm-up epochs and the cosine, bf16 where the CPU computes it fast, channels-last.
#: Batches of 64 gave a better kNN than 128 in the same time.
INTL_FLAGS = [
    "--method", "intl", "--arch", "resnet18", "--width", "16", "--cifar_stem",
    "--nmb_crops", "2", "--crops_size", "16", "--min_scale_crops", "0.2", "--max_scale_crops", "1.0",
    "--gaussian_prob", "0.5", "--solarization_prob", "0.0",
    "--projection_layers", "3", "--projection_size", "256", "--emb", "256", "--iters", "4", "--axis", "0",
    "--bs", "64", "--lr", "0.5", "--warmup_eps", "2", "-j", "0", "-p", "21", "--save_freq", "1000",
    "--precision", "auto", "--channels_last", "--no_tensorboard", "--no_progress",
]  # fmt: skip
#: ``cwrgp-train --method cwrgp`` (CW-RGP 2): W-MSE's views at the digits' 32 px (``cwrgp-train`` crops at the
#: dataset's side), the W-MSE ResNet-18 (zero-initialised residual BN) of width 16, the original's head
#: (1024 hidden, 512-d embedding) and whitening (4 groups of 128 channels over sub-batches of 64), Adam at a
#: constant 2e-3 after 20 warm-up iterations (the step drops and the cosine did worse in 25 epochs).
CWRGP_FLAGS = [
    "--method", "cwrgp", "--arch", "resnet18", "--width", "16", "--num_samples", "2",
    "--bs", "128", "--w_size", "64", "--emb", "512", "--group", "4", "--head_size", "1024",
    "--lr", "2e-3", "--warmup_iters", "20", "--lr_step", "none", "--eval_every", "0",
    "--num_workers", "0", "--log_every", "10", "--save_freq", "1000",
    "--precision", "auto", "--channels_last", "--no_tensorboard", "--no_progress",
]  # fmt: skip
#: torch threads. One: on this 2-core machine, shared with other jobs, 2 threads ran 5x slower than 1 (the
#: threads wait on each other when a core is busy), and the small digits' augmentation is cheap.
THREADS = 1


@dataclass(frozen=True)
class Recipe:
    """What the two demos do differently."""

    title: str
    trainer: str
    env_name: str
    epochs: int
    #: the side and the input normalisation of pre-training, which the evaluation uses
    size: int
    normalization: str
    flags: Callable[[], list[str]]
    parse_args: Callable[[list[str]], argparse.Namespace]
    train: Callable[[argparse.Namespace, list[str]], Path]
    build_model: Callable[[argparse.Namespace], torch.nn.Module]


RECIPES = {
    "intl": Recipe(
        title="INTL",
        trainer="intl-train",
        env_name="INTL",
        epochs=40,
        size=16,
        normalization="imagenet",
        flags=lambda: INTL_FLAGS,
        parse_args=intl_cli.parse_args,
        train=intl_train.train,
        build_model=intl_train.build_model,
    ),
    "cwrgp": Recipe(
        title="CW-RGP",
        trainer="cwrgp-train",
        env_name="CWRG",
        epochs=25,
        size=32,
        normalization="digits",
        flags=lambda: CWRGP_FLAGS,
        parse_args=cwrgp_cli.parse_args,
        train=cwrgp_train.train,
        build_model=cwrgp_train.build_model,
    ),
}


def build_parser(recipe: Recipe, prog: str) -> argparse.ArgumentParser:
    parser = comparison_demo_parser(
        prog,
        f"{recipe.title} pre-training ({recipe.trainer}) on the embedded digits on CPU, then kNN "
        "and linear evaluation of the pretrained trunk and of the same network at random initialisation, side "
        "by side.",
        epochs=recipe.epochs,
    )
    parser.add_argument(
        "--dataset", choices=("digits",), default="digits", help="the embedded digits (offline)"
    )
    return parser


def evaluate(checkpoint: Path, recipe: Recipe, device: str, seed: int) -> dict[str, dict]:
    """kNN (InsDis: cosine, k 200, τ 0.07) and a linear probe on cached features, both on digits at the side
    and normalisation of pre-training."""
    common: dict[str, Any] = {
        "dataset": "digits",
        "resize": recipe.size,
        "crop": recipe.size,
        "normalization": recipe.normalization,
        "device": device,
    }
    knn = evaluate_checkpoint("knn", checkpoint, preset="instdisc", **common)
    linear = evaluate_checkpoint("linear", checkpoint, preset="quick", seed=seed, **common)
    return {"knn": knn, "linear": linear}


def save_random_init(checkpoint: Path, model: torch.nn.Module, path: Path) -> Path:
    """``checkpoint`` (as the trainer wrote it) with ``model``'s weights, at epoch 0 and without optimiser state."""
    state = load_training_checkpoint(checkpoint)
    state.update(state_dict=model.original_state_dict(), optimizer={}, epoch=0, iteration=0, global_step=0)
    return atomic_save(state, path)


def run_demo(method: str, argv: list[str] | None = None, prog: str | None = None) -> int:
    """The demo of ``method`` (``intl`` or ``cwrgp``) with the command line ``argv``."""
    recipe = RECIPES[method]
    opts = build_parser(recipe, prog or f"selfsup-demo --method {method}").parse_args(argv)
    torch.set_num_threads(THREADS)
    out = Path(opts.output)
    ckpt_dir = out / "run"
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    started = time.perf_counter()
    flags = [*recipe.flags(), "--dataset", opts.dataset, "--ckpt_dir", str(ckpt_dir)]
    flags += ["--env_name", recipe.env_name, "--epochs", str(opts.epochs)]
    flags += ["--seed", str(opts.seed), "--device", opts.device]
    args = recipe.parse_args(flags)
    if getattr(args, "warmup_eps", 0) >= opts.epochs:  # INTL warms up for fewer epochs than it trains
        flags += ["--warmup_eps", str(opts.epochs - 1)]
        args = recipe.parse_args(flags)
    checkpoint = recipe.train(args, [recipe.trainer, *flags])
    train_s = time.perf_counter() - started

    torch.manual_seed(opts.seed)
    random_path = save_random_init(checkpoint, recipe.build_model(args), out / "random_init.pth.tar")
    tic = time.perf_counter()
    results = {
        "pretrained": evaluate(checkpoint, recipe, opts.device, opts.seed),
        "random_init": evaluate(random_path, recipe, opts.device, opts.seed),
    }
    eval_s = time.perf_counter() - tic
    seconds = {"train": train_s, "evaluate": eval_s, "total": time.perf_counter() - started}
    payload = write_comparison(
        out / "results.json",
        results,
        seconds=seconds,
        method=method,
        checkpoint=str(checkpoint),
        random_init_checkpoint=str(random_path),
        train_flags=flags,
    )
    config = json.loads((ckpt_dir / recipe.env_name / "config.json").read_text())
    precision = config.get("precision_resolved", args.precision)
    title = (
        f"{recipe.title} on the embedded digits ({opts.epochs} epochs, 1347 train / 450 test images at "
        f"{recipe.size} px), ResNet-18 width {args.width}, {precision}:"
    )
    print(format_comparison(title, payload["summary"], seconds))
    print(f"wrote {out / 'results.json'}")
    return 0


def main_intl(argv: list[str] | None = None, prog: str = "selfsup-demo --method intl") -> int:
    """``selfsup-demo --method intl``."""
    return run_demo("intl", argv, prog)


def main_cwrgp(argv: list[str] | None = None, prog: str = "selfsup-demo --method cwrgp") -> int:
    """``selfsup-demo --method cwrgp``."""
    return run_demo("cwrgp", argv, prog)


#: ``python -m selfsup.intl.demo`` runs the INTL demo.
main = main_intl


if __name__ == "__main__":
    sys.exit(main())
