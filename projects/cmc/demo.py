"""``selfsup-demo --method cmc``: CMC's own trainer (``cmc-train``, L | ab views) on the colourised embedded
digits on CPU, sized to the machine, then kNN and linear evaluation of both streams of the pretrained encoder and
of the same network at its random initialisation, side by side (:func:`selfsup.shared.evaluation.demo.run_demo`).

The gray ``digits`` have ab = 0, so L | ab contrast has nothing to share there; ``digits_color`` gives every
image a foreground and a background colour drawn independently of the class (and L independently of ab), so both
views show the digit's shape and only the shape is common to them. Evaluation reads the checkpoint's Lab view
with CMC's normalisation and concatenates the pooled features of both streams (the CMC linear protocol).

**Two epochs at most, on purpose.** On these 1347 images CMC's memory-bank objective does not learn the
correspondence of the two views (retrieving an image's ab embedding from its L embedding stays at chance, 1 in
1347, in every recipe we tried), and after a few epochs its features drift back towards those of the random
network: kNN 51 % after 1 epoch, 50 % after 2, 36 % after 5, 28 % after 14 against 27 % at random init (seed 0;
seeds 1 and 2 alike). Each memory row is rewritten once per epoch, so a positive row (written at the image's
previous visit) is on average twice as old as a uniformly drawn negative; with no shared content to learn, the
loss falls by moving each view away from the other view's recently written rows, the two views' mean embeddings
turn opposite and every score tends to -1 (the loss returns to chance). ``projects/cmc/README.md`` has the
measurements. The budget therefore never chooses more than the 1-2 epochs where the features beat random
initialisation.

Writes ``OUTPUT/cmc/results.json``, ``OUTPUT/cmc/loss.png``, the random-initialisation checkpoint
``OUTPUT/cmc/random_init.pth`` and the run under ``OUTPUT/cmc/run/``; runs offline.
"""

from __future__ import annotations

import sys
from pathlib import Path

from selfsup.cmc.train import TRAINER, run_name
from selfsup.shared.evaluation.demo import DemoRecipe, run_demo

__all__ = ["DATASET", "RECIPE", "TRAIN_FLAGS", "main", "run_dir"]

DATASET = "digits_color"
#: The original's flags only: ``--view Lab``, two ResNet-18 halves (``resnet18v1``) with the CIFAR stem at 16 px
#: (the digits are 8x8 images upscaled), crops keeping at least 30 % of the image, ``--softmax`` against 1024
#: uniform negatives of each memory bank at ``--nce_t 0.3``, ``--nce_m 0.5``, SGD at ``--learning_rate 0.01`` (no
#: decay), batch 64, channels-last, data in the main process (the Lab conversion is under a tenth of a step).
TRAIN_FLAGS = [
    "--dataset", DATASET, "--view", "Lab", "--model", "resnet18v1", "--cifar_stem", "--image_size", "16",
    "--crop_low", "0.3", "--softmax", "--nce_k", "1024", "--nce_t", "0.3", "--nce_m", "0.5",
    "--batch_size", "64", "--learning_rate", "0.01", "--lr_decay_epochs", "1000",
    "--num_workers", "0", "--print_freq", "21", "--save_freq", "1000",
    "--channels_last", "--no_tensorboard", "--no_progress",
]  # fmt: skip

RECIPE = DemoRecipe(
    name="cmc",
    title="CMC (L | ab) on the colourised digits (1347 train / 450 test images at 16 px), two ResNet-18 halves",
    entry=TRAINER,
    flags=lambda run_dir: [*TRAIN_FLAGS, "--model_path", str(run_dir), "--tb_path", str(run_dir / "tb")],
    length=lambda epochs: ["--epochs", str(epochs)],
    reference_epochs=2,  # the features drift back towards random ones after that (module docstring)
    description="CMC pre-training (cmc-train, L | ab views) on the colourised embedded digits on CPU, sized to "
    "the machine.",
    eval_dataset=DATASET,
    threads=1,
)


def main(argv: list[str] | None = None, prog: str = "selfsup-demo --method cmc") -> int:
    return run_demo(RECIPE, argv, prog)


def run_dir(output: str | Path) -> Path:
    """Where ``selfsup-demo --method cmc --output OUTPUT`` trains (the original's run name)."""
    from selfsup.cmc.cli import parse_cmc_args

    args = parse_cmc_args([*RECIPE.flags(Path(output) / "cmc" / "run"), *RECIPE.length(1)])
    return Path(args.model_path) / run_name(args)


if __name__ == "__main__":
    sys.exit(main())
