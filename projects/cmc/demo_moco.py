"""``selfsup-demo --method cmc-moco``: the CMC repository's MoCo trainer (``cmc-moco-ins-train --moco``) on the
embedded digits on CPU, sized to the machine, then kNN and linear evaluation of the pretrained encoder and of the
same network at its random initialisation, side by side (:func:`selfsup.shared.evaluation.demo.run_demo`).

Writes ``OUTPUT/cmc-moco/results.json``, ``OUTPUT/cmc-moco/loss.png``, the random-initialisation checkpoint
``OUTPUT/cmc-moco/random_init.pth`` and the run under ``OUTPUT/cmc-moco/run/``; runs offline.
"""

from __future__ import annotations

import sys
from pathlib import Path

from selfsup.cmc.train_moco_ins import CMC_MOCO, run_name
from selfsup.shared.evaluation.demo import DemoRecipe, run_demo

__all__ = ["RECIPE", "TRAIN_FLAGS", "main", "run_dir"]

#: ``cmc-moco-ins-train --moco`` with the repository's ``--aug CJ`` views at 16 px (the digits are 8x8 images
#: upscaled: 16 px loses nothing) from crops keeping at least 85 % of the image (MoCo's kNN first falls below
#: random init, then passes it: with 30 % crops it was still below after 7 epochs, 77.11 against 77.78 %; with
#: 70 % it passed after 5, with 85 % after 4: 83.78 %), a CIFAR-stem ResNet-18 of quarter width
#: (``resnet18x0.25``: 16 planes in the first stage; 4x faster than ``resnet18`` on fp32, which fits a few
#: epochs in the budget of a CPU without bf16), softmax cross-entropy at τ 0.2 against a queue of 256 keys
#: (smaller than the 1347 training images), key-encoder momentum 0.99, SGD at 0.06 (a constant rate; 0.03 and
#: 0.12 did worse in 10 epochs, as did batches of 32, a queue of 128 and momentum 0.95), and BN over 4
#: sub-batches per encoder (``--bn_splits 4``: the per-GPU BN of the original's 4-GPU DataParallel run,
#: without which shuffle BN changes nothing on one device and the key encoder's BN statistics give the task
#: away). One torch thread for the model and one loader worker (the augmentation is a third of a step on one
#: thread; the views are seeded per image, so the worker count does not change the result).
TRAIN_FLAGS = [
    "--moco", "--dataset", "digits", "--model", "resnet18x0.25", "--cifar_stem", "--image_size", "16",
    "--crop", "0.85", "--softmax", "--nce_k", "256", "--nce_t", "0.2", "--alpha", "0.99", "--bn_splits", "4",
    "--batch_size", "64", "--learning_rate", "0.06", "--lr_decay_epochs", "1000",
    "--num_workers", "1", "--print_freq", "22", "--save_freq", "1000", "--no_tensorboard", "--no_progress",
]  # fmt: skip

RECIPE = DemoRecipe(
    name="cmc-moco",
    title="MoCo of the CMC repository on the embedded digits (1347 train / 450 test images at 16 px), ResNet-18 "
    "at quarter width",
    entry=CMC_MOCO,
    flags=lambda run_dir: [*TRAIN_FLAGS, "--model_path", str(run_dir), "--tb_path", str(run_dir / "tb")],
    length=lambda epochs: ["--epochs", str(epochs)],
    reference_epochs=40,
    description="The CMC repository's MoCo trainer (cmc-moco-ins-train --moco) on the embedded digits on CPU, "
    "sized to the machine.",
    threads=1,  # 2 cores: one for the model, one for the loader worker
)


def main(argv: list[str] | None = None, prog: str = "selfsup-demo --method cmc-moco") -> int:
    return run_demo(RECIPE, argv, prog)


def run_dir(output: str | Path) -> Path:
    """Where ``selfsup-demo --method cmc-moco --output OUTPUT`` trains (the original's run name)."""
    from selfsup.cmc.cli import parse_moco_ins_args

    args = parse_moco_ins_args([*RECIPE.flags(Path(output) / "cmc-moco" / "run"), *RECIPE.length(1)])
    return Path(args.model_path) / run_name(args)


if __name__ == "__main__":
    sys.exit(main())
