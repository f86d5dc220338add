"""``selfsup-demo --method swav`` and ``selfsup-demo --method unmix``: SwAV, plain or with Un-Mix image
mixtures, pre-trained with ``swav-unmix-train`` on the embedded digits on CPU, then kNN and linear evaluation of
the pretrained trunk and of the same network at random initialisation, side by side.

One recipe for both methods, which differ only in ``--run_swav`` (and Un-Mix's ``--unmix_prob``): two 16 px crops
keeping at least 30 % of the image, with the Un-Mix CIFAR code's views (``--cifar_aug true``: colour strength
0.5, no blur; SwAV's ImageNet views, whose blur of radius up to 2 px is strong at 16 px, trained worse here); a
CIFAR-stem ResNet-18 of width 16; 100 prototypes of a 32-d embedding (hidden layer 256), frozen for the first
epoch; Sinkhorn with ε 0.05 on the batch (no queue); LARC with a base learning rate of 2.4 (LARC scales each step
to 0.001·lr of the weight norm, so the ~1300 iterations of this run need a larger rate than SwAV's 0.6 at batch
256), one warm-up epoch, then a cosine. The departure from SwAV's defaults that matters is the softmax
temperature: at τ 0.1 nearly every short run on these 1347 images collapsed to uniform predictions (the loss
stuck at ln 100); at τ 0.3 they train. bf16 where the CPU computes it natively (``--precision auto``) and
channels-last; 60 epochs take about 1.5 minutes (SwAV) and 1.7 minutes (Un-Mix, a third forward per pair of
crops) on a 2-core CPU.

Writes ``OUTPUT/results.json``, the training run under ``OUTPUT/run/`` and the random-initialisation
checkpoint ``OUTPUT/random_init.pth``; runs offline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from selfsup.shared.checkpoints.io import atomic_save
from selfsup.shared.evaluation import evaluate_checkpoint
from selfsup.shared.evaluation.comparison import comparison_demo_parser, format_comparison, write_comparison
from selfsup.shared.runtime.trainer import FORMAT_VERSION
from selfsup.swav_unmix.cli import parse_args
from selfsup.swav_unmix.train import SwAVUnMixTrainer, build_model, train
from selfsup.swav_unmix.transforms import input_normalization

__all__ = ["METHODS", "TRAIN_FLAGS", "main", "main_swav", "main_unmix", "random_init_checkpoint"]

#: The pre-training recipe shared by both methods (everything but --run_swav and the Un-Mix flags).
TRAIN_FLAGS = [
    "--dataset", "digits", "--arch", "resnet18", "--width", "16", "--cifar_stem",
    "--nmb_crops", "2", "--size_crops", "16", "--min_scale_crops", "0.3", "--max_scale_crops", "1",
    "--cifar_aug", "true", "--crops_for_assign", "0", "1",
    "--temperature", "0.3", "--epsilon", "0.05", "--sinkhorn_iterations", "3",
    "--nmb_prototypes", "100", "--feat_dim", "32", "--hidden_mlp", "256",
    "--batch_size", "64", "--base_lr", "2.4", "--final_lr", "0.0006", "--warmup_epochs", "1",
    "--freeze_prototypes_niters", "21", "--wd", "1e-6", "--queue_length", "0",
    "--precision", "auto", "--channels_last", "--workers", "0", "--checkpoint_freq", "1000",
    "--log_every", "21", "--no_tensorboard", "--no_progress",
]  # fmt: skip
#: method -> (its flags, its name in the printed title). Un-Mix mixes globally (mixup) or by regions (CutMix)
#: with equal probability, as in the Un-Mix CIFAR code.
METHODS: dict[str, tuple[list[str], str]] = {
    "swav": (["--run_swav", "true"], "SwAV"),
    "unmix": (["--run_swav", "false", "--unmix_prob", "0.5", "--unmix_beta", "1.0"], "SwAV with Un-Mix"),
}
#: Pre-training's resolution; evaluation also uses its input normalisation (the checkpoint's, see below).
SIZE = 16


def build_parser(method: str, prog: str) -> argparse.ArgumentParser:
    return comparison_demo_parser(
        prog,
        f"{METHODS[method][1]} (swav-unmix-train) on the embedded digits on CPU, then kNN and linear "
        "evaluation of the pretrained trunk and of the same network at random initialisation, side by side.",
        epochs=60,
        output_help="folder for results.json, run/ and random_init.pth",
        threads=(
            2,
            "torch CPU threads (2 for a 2-core CPU; 1 where other processes share the cores: a thread that "
            "waits for a busy core stalls every operation of this small network)",
        ),
    )


def random_init_checkpoint(args: argparse.Namespace, seed: int, path: Path) -> Path:
    """The network of ``args`` at its initialisation under ``seed``, in the file format the trainer writes (the
    entries ``selfsup-eval`` reads: format, export, backbone, input normalisation), at epoch 0."""
    torch.manual_seed(seed)
    model = build_model(args)
    trainer = SwAVUnMixTrainer(args)
    state = {
        "epoch": 0,
        "state_dict": model.original_state_dict(),
        "format": "selfsup",
        "format_version": FORMAT_VERSION,
        "project": trainer.project,
        **trainer.export().entries(),
    }
    return atomic_save(state, path)


def evaluate(checkpoint: Path, device: str, seed: int, normalization: str) -> dict[str, dict]:
    """kNN (InsDis: cosine, k 200, τ 0.07) and a linear probe on cached features, both on digits at 16 px."""
    common = {
        "dataset": "digits",
        "resize": SIZE,
        "crop": SIZE,
        "normalization": normalization,
        "device": device,
    }
    knn = evaluate_checkpoint("knn", checkpoint, preset="instdisc", **common)
    linear = evaluate_checkpoint("linear", checkpoint, preset="quick", seed=seed, **common)
    return {"knn": knn, "linear": linear}


def main(argv: list[str] | None = None, prog: str | None = None, *, method: str = "swav") -> int:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    parser = build_parser(method, prog or f"selfsup-demo --method {method}")
    opts = parser.parse_args(argv)
    if opts.epochs < 1 or opts.threads < 1:
        parser.error(f"--epochs and --threads must be >= 1, got {opts.epochs} and {opts.threads}")
    # 2 cores: both threads go to the model, the (cheap) augmentation runs in the main process
    torch.set_num_threads(opts.threads)
    out = Path(opts.output)
    run = out / "run"
    started = time.perf_counter()
    flags = [*TRAIN_FLAGS, *METHODS[method][0], "--dump_path", str(run), "--epochs", str(opts.epochs)]
    flags += ["--seed", str(opts.seed), "--device", opts.device]
    if opts.epochs == 1:  # no room for the warm-up epoch in a one-epoch run (the quick test)
        flags += ["--warmup_epochs", "0"]
    args = parse_args(flags)
    if run.exists():  # the trainer restarts from a checkpoint.pth.tar it finds: start afresh
        shutil.rmtree(run)
    checkpoint = train(args, ["swav-unmix-train", *flags])
    train_s = time.perf_counter() - started

    random_path = random_init_checkpoint(args, opts.seed, out / "random_init.pth")
    normalization = input_normalization(args)
    tic = time.perf_counter()
    results = {
        "pretrained": evaluate(checkpoint, opts.device, opts.seed, normalization),
        "random_init": evaluate(random_path, opts.device, opts.seed, normalization),
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
    precision = json.loads((run / "config.json").read_text()).get("precision_resolved", args.precision)
    title = (
        f"{METHODS[method][1]} on the embedded digits ({opts.epochs} epochs, 1347 train / 450 test images at "
        f"{SIZE} px), ResNet-18 width 16, {precision}:"
    )
    print(format_comparison(title, payload["summary"], seconds))
    print(f"wrote {out / 'results.json'}")
    return 0


def main_swav(argv: list[str] | None = None, prog: str = "selfsup-demo --method swav") -> int:
    """``selfsup-demo --method swav``: plain SwAV (``--run_swav true``)."""
    return main(argv, prog, method="swav")


def main_unmix(argv: list[str] | None = None, prog: str = "selfsup-demo --method unmix") -> int:
    """``selfsup-demo --method unmix``: SwAV with Un-Mix (``--run_swav false``)."""
    return main(argv, prog, method="unmix")


if __name__ == "__main__":
    sys.exit(main_swav())
