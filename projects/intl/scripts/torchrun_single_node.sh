#!/usr/bin/env bash
# The INTL recipes on the GPUs of one machine (torchrun --standalone): the stages of RECIPE.sbatch (pre-training,
# then its evaluations) with TORCHRUN_NPROC set, as the original main.py / evaluate.py spawn one process per GPU.
#   RECIPE ep100_multi-crop_ema | ep200_multi-crop_ema | ep400_multi-crop_ema | ep800_multi-crop_ema | ep800 | in100:
#     winci-ai/INTL scripts/<RECIPE>.sh (1 node x 8 GPUs in the original; --bs is global, so the batch stays 256,
#     or 128 for in100, on any number of GPUs that divides it);
#   RECIPE cifar10 | cifar100: scripts/cifar10.sh / cifar100.sh (cifar.sbatch; one GPU in the original).
# CW-RGP (cwrgp.sbatch) runs on one process, as the original: bash cwrgp.sbatch VARIANT DATASET.
# Usage: torchrun_single_node.sh NUM_GPUS RECIPE [extra intl-train flags]
#   env as in the recipe file (DATASET_PATH, EXPERIMENT_PATH, EPOCHS, PRETRAINED, STAGES, ...);
#   DRY_RUN=1 prints the commands instead of running them.
# Example: DATASET_PATH=/data/imagenet torchrun_single_node.sh 8 ep400_multi-crop_ema
set -euo pipefail
usage="usage: torchrun_single_node.sh NUM_GPUS RECIPE [flags]"
ngpus=${1:?$usage}
recipe=${2:?$usage}
shift 2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case $recipe in
  cifar10 | cifar100) TORCHRUN_NPROC=$ngpus exec bash "$here/cifar.sbatch" "$recipe" "$@" ;;
  ep*_multi-crop_ema | ep800 | in100)
    if [[ -f $here/$recipe.sbatch ]]; then
      TORCHRUN_NPROC=$ngpus exec bash "$here/$recipe.sbatch" "$@"
    fi ;;
esac
echo "unknown RECIPE $recipe (expected ep100_multi-crop_ema, ep200_multi-crop_ema, ep400_multi-crop_ema," \
  "ep800_multi-crop_ema, ep800, in100, cifar10 or cifar100)" >&2
exit 2
