#!/usr/bin/env bash
# The ImageNet evaluations of eval.sbatch (linear: SwAV/Un-Mix eval_linear.py; semisup1 / semisup10:
# eval_semisup.py with 1 % / 10 % of the labels) on the GPUs of one machine: the README's
# "python -m torch.distributed.launch --nproc_per_node=8 eval_*.py" commands with torchrun --standalone.
# Usage: torchrun_eval.sh NUM_GPUS {linear|semisup1|semisup10} [extra flags]
#   env as in eval.sbatch: EXPERIMENT_PATH (pre-training folder), PRETRAINED, EVAL_PATH, DATASET_PATH, ARCH;
#   DRY_RUN=1 prints the command instead of running it. The original protocols use 8 GPUs x 32.
# Example: EXPERIMENT_PATH=./experiments/unmix_swav_400ep_readme torchrun_eval.sh 8 linear
set -euo pipefail
usage="usage: torchrun_eval.sh NUM_GPUS {linear|semisup1|semisup10} [flags]"
ngpus=${1:?$usage}
protocol=${2:?$usage}
shift 2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TORCHRUN_NPROC=$ngpus exec bash "$here/eval.sbatch" "$protocol" "$@"
