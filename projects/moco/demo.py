"""``selfsup-demo --method moco`` (alias ``moco-demo``): MoCo pre-training on the embedded digits on CPU, sized to
the machine, then kNN and linear evaluation of the pretrained encoder and of the same network at its random
initialisation, side by side (:func:`selfsup.shared.evaluation.demo.run_demo`).

Writes ``OUTPUT/moco/results.json``, ``OUTPUT/moco/loss.png`` and the training run under ``OUTPUT/moco/run/``.
Runs offline: the data ship with scikit-learn.
"""

from __future__ import annotations

import sys
from pathlib import Path

from selfsup.moco.train import TRAINER
from selfsup.shared.evaluation.demo import DemoRecipe, run_demo

#: The demo's pre-training recipe. Digits are 8x8 images upscaled, so 16 px crops lose nothing and train 4x
#: faster than 32 px; crops keep at least 30 % of the image (an 8 % crop would hold one or two original
#: pixels). MoCo v2's augmentation, MLP head and temperature; a queue smaller than the 1347-image training set
#: keeps few of the batch's own images among the negatives; shuffle BN over 4 sub-batches (the M3 setting,
#: emulated on one device) stops the BN shortcut. A constant learning rate of 0.01: the random network's
#: features are already good on digits (kNN 81 %), and larger rates first pull them below that (at 20 fp32
#: epochs, about what the slowest CPU fits, kNN reached 87.6 % at 0.01, 84.4 % at 0.03, and stayed below random
#: init at 0.1, the rate of 100-epoch runs). A narrow ResNet-18 (width 16), channels-last; the augmentation costs
#: about as much as the step, so it runs in one loader worker beside the model's torch thread.
TRAIN_FLAGS = [
    "--dataset", "digits", "--arch", "resnet18", "--width", "16", "--cifar_stem",
    "--crop", "16", "--crop-min", "0.3", "--aug-plus",
    "--batch_size", "64", "--num_keys", "256", "--momentum", "0.99", "--temperature", "0.2", "--lr", "0.01",
    "--mlp", "--shuffle_bn", "--bn_splits", "4", "--channels_last",
    "--num_workers", "1", "--save_weight_epoch", "10", "--log_every", "22", "--plot_iter", "0",
    "--dataset_name", "DIGITS", "--exp_version", "demo", "--no_tensorboard", "--no_progress",
]  # fmt: skip

RECIPE = DemoRecipe(
    name="moco",
    title="MoCo v2 on the embedded digits (1347 train / 450 test images at 16 px), ResNet-18 width 16",
    entry=TRAINER,
    flags=lambda run_dir: [*TRAIN_FLAGS, "--output_root", str(run_dir)],
    length=lambda epochs: ["--max_epoch", str(epochs)],
    reference_epochs=100,
    description="MoCo pre-training (moco-train, MoCo v2 settings) on the embedded digits on CPU, sized to the "
    "machine.",
    threads=1,  # 2 cores: one for the model, one for the data-loading worker
    # fp32 on every CPU: in bf16 the contrastive gradients of this small network differ from fp32's by 30-45 %
    # (first step, same batch), and at 19 epochs the kNN stayed below random init (76.0 % against 86.0 % in
    # fp32); the step is bound by the loader worker, so bf16 would not buy more epochs either
    precision="fp32",
)


def main(argv: list[str] | None = None, prog: str = "moco-demo") -> int:
    return run_demo(RECIPE, argv, prog)


def run_dir(output: str | Path) -> Path:
    """Where ``selfsup-demo --method moco --output OUTPUT`` trains: MoCo's layout under ``OUTPUT/moco/run``."""
    return Path(output) / "moco" / "run" / "DIGITS" / "demo"


if __name__ == "__main__":
    sys.exit(main())
