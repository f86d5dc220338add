"""``selfsup-demo --method cmc``: CMC on colourised embedded digits on CPU, then kNN and linear evaluation.

CMC's two views are colour channels (L and ab), and the embedded digits are gray, where ab carries nothing. The
demo therefore colours each digit first: stroke and background get two random colours per image (fixed by
the image's index), so both L and ab show the digit's shape while the colours themselves say nothing about the
class. It writes that data set as ``OUTPUT/colour_digits.npz`` (the ``.npz`` layout of ``--dataset npz``),
pre-trains ``cmc-train`` on it, and evaluates the two-stream encoder (both views concatenated, as the paper
reports) and the same network at its random initialisation with a kNN classifier and a linear probe on the test
split. Writes ``OUTPUT/results.json`` and the run under ``OUTPUT/run/``; runs offline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from selfsup.cmc.cli import parse_cmc_args
from selfsup.cmc.model import build_cmc_model
from selfsup.cmc.train import CMCTrainer, run_name
from selfsup.shared.checkpoints.io import atomic_save
from selfsup.shared.data.digits import DIGITS_CLASSES, digits_arrays
from selfsup.shared.evaluation import evaluate_checkpoint

#: The demo's recipe: 16 px crops of the 32 px digits (8x8 originals), a CIFAR-stem ResNet-18 per view at
#: half width (``resnet18v1``), softmax cross-entropy (NCE's one-time Z is unreliable on a small data set,
#: HobbitLong/CMC#12) against 1024 negatives from memories of the 1347 training images, batch 64.
TRAIN_FLAGS = [
    "--model", "resnet18v1", "--cifar_stem", "--image_size", "16", "--crop_low", "0.3",
    "--softmax", "--nce_k", "1024", "--nce_t", "0.1", "--nce_m", "0.5",
    "--batch_size", "64", "--learning_rate", "0.03", "--lr_decay_epochs", "1000",
    "--num_workers", "1", "--print_freq", "21", "--save_freq", "1000",
    "--precision", "auto", "--channels_last", "--no_tensorboard", "--no_progress",
]  # fmt: skip
EVAL = {"resize": 16, "crop": 16, "view": "both"}


def colour_digits(seed: int = 0) -> dict[str, np.ndarray]:
    """The digits with a random stroke colour and background colour per image (uint8 RGB, deterministic)."""
    arrays: dict[str, np.ndarray] = {}
    for offset, split in enumerate(("train", "test")):
        images, labels = digits_arrays(split)
        rng = np.random.default_rng([seed, offset])
        stroke = rng.integers(64, 256, (len(images), 1, 1, 3))
        weight = images[..., :1].astype(np.float64) / 255.0
        coloured = weight * stroke
        arrays[f"{split}_images"] = np.rint(coloured).clip(0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels
    arrays["classes"] = np.asarray(DIGITS_CLASSES)
    return arrays


def build_parser(prog: str = "selfsup-demo --method cmc") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="CMC (L and ab views) on colourised embedded digits on CPU, then kNN and linear evaluation "
        "of the pretrained two-stream encoder and of the same network at random initialisation, side by side.",
    )
    parser.add_argument("--output", default="demo_output", help="folder for results.json, the data and run/")
    parser.add_argument("--epochs", type=int, default=40, help="pre-training epochs on the 1347 digits")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of pre-training, evaluation and the random init"
    )
    parser.add_argument("--device", default="cpu", help="device for training and evaluation")
    return parser


def evaluate(checkpoint: Path, data: Path, device: str, seed: int) -> dict[str, dict]:
    common = {"dataset": "npz", "root": str(data), "device": device, **EVAL}
    knn = evaluate_checkpoint("knn", checkpoint, preset="instdisc", **common)
    linear = evaluate_checkpoint("linear", checkpoint, preset="quick", seed=seed, **common)
    return {"knn": knn, "linear": linear}


def main(argv: list[str] | None = None, prog: str = "selfsup-demo --method cmc") -> int:
    opts = build_parser(prog).parse_args(argv)
    torch.set_num_threads(1)  # 2 cores: one for the model, one for the loader worker
    out = Path(opts.output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = out / "colour_digits.npz"
    np.savez(data, **colour_digits(opts.seed))
    flags = [*TRAIN_FLAGS, "--dataset", "npz", "--data_folder", str(data), "--model_path", str(out / "run")]
    flags += ["--epochs", str(opts.epochs), "--seed", str(opts.seed), "--device", opts.device]
    args = parse_cmc_args(flags)
    run = Path(args.model_path) / run_name(args)
    if run.exists():
        shutil.rmtree(run)
    checkpoint = CMCTrainer(args, ["cmc-train", *flags]).train()
    train_s = time.perf_counter() - started

    torch.manual_seed(opts.seed)
    random_model = build_cmc_model(args.model, feat_dim=args.feat_dim, cifar_stem=args.cifar_stem)
    random_path = out / "random_init.pth"
    atomic_save(
        {"model": random_model.original_state_dict(), "opt": {"view": args.view}, "epoch": 0}, random_path
    )
    tic = time.perf_counter()
    results = {
        "pretrained": evaluate(checkpoint, data, opts.device, opts.seed),
        "random_init": evaluate(random_path, data, opts.device, opts.seed),
    }
    eval_s = time.perf_counter() - tic
    summary = {
        name: {f"{p}_top{k}": r[p][f"top{k}"] for p in ("knn", "linear") for k in (1, 5)}
        for name, r in results.items()
    }
    payload = {
        "summary": summary,
        "details": results,
        "checkpoint": str(checkpoint),
        "train_flags": flags,
        "seconds": {"train": train_s, "evaluate": eval_s, "total": time.perf_counter() - started},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    precision = json.loads((run / "config.json").read_text()).get("precision_resolved", args.precision)
    print(
        f"\nCMC (L | ab) on colourised digits ({opts.epochs} epochs, 1347 train / 450 test images at 16 px), "
        f"two ResNet-18 halves (resnet18v1), {precision}; both views concatenated:"
    )
    print(f"{'encoder':<14}{'kNN top-1':>11}{'linear top-1':>14}")
    for name, row in summary.items():
        print(f"{name:<14}{row['knn_top1']:>10.2f}%{row['linear_top1']:>13.2f}%")
    seconds = payload["seconds"]
    print(f"pre-training {seconds['train']:.0f} s, evaluation {seconds['evaluate']:.0f} s")
    print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
