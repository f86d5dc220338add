#!/usr/bin/env bash
# swav-unmix-train on the GPUs of one machine (torchrun --standalone).
#   RECIPE readme: the Un-Mix README command (UnMix_SwAV/for_ImageNet/README.md, "Singlenode training"; SwAV's
#     README command with main_swav_unmix.py), flags unchanged: 400 epochs, 8 GPUs x 32 = 256, 2x224+6x96,
#     queue 3840 from epoch 15 (the original dies once that queue is full, spec swav_unmix.md §10.1).
#   RECIPE 100ep | 200ep | 400ep | 800ep | 200ep_bs256 | 400ep_bs256 | 400ep_2x224 | RN50w2_400ep | RN50w4_400ep:
#     the flags of unmix_swav_<RECIPE>_pretrain.sbatch (that file run under torchrun); the bs256 recipes are
#     single-node 4-GPU runs, the others were tuned for 64 or 128 GPUs (a note tells the smaller global batch).
# Usage: torchrun_pretrain.sh NUM_GPUS RECIPE [extra swav-unmix-train flags]
#   env DATASET_PATH: ImageNet root (train/<class>/*) or its train/ folder; EXPERIMENT_PATH: run folder.
#   DRY_RUN=1 prints the command instead of running it.
#   The trainer restarts from $EXPERIMENT_PATH/checkpoint.pth.tar when it exists.
# Example: DATASET_PATH=/data/imagenet torchrun_pretrain.sh 8 readme
set -euo pipefail
usage="usage: torchrun_pretrain.sh NUM_GPUS RECIPE [flags]"
ngpus=${1:?$usage}
recipe=${2:?$usage}
shift 2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ $recipe != readme ]]; then
  script=$here/unmix_swav_${recipe}_pretrain.sbatch
  if [[ ! -f $script ]]; then
    echo "unknown RECIPE $recipe (expected readme or the <RECIPE> of a unmix_swav_<RECIPE>_pretrain.sbatch)" >&2
    exit 2
  fi
  TORCHRUN_NPROC=$ngpus exec bash "$script" "$@"
fi
DATASET_PATH=${DATASET_PATH:-./data/imagenet}
EXPERIMENT_PATH=${EXPERIMENT_PATH:-./experiments/unmix_swav_400ep_readme}
cmd=(torchrun --standalone --nproc_per_node "$ngpus" -m selfsup.swav_unmix.train --data_path "$DATASET_PATH"
  --epochs 400 --base_lr 0.6 --final_lr 0.0006 --warmup_epochs 0 --batch_size 32 --size_crops 224 96
  --nmb_crops 2 6 --min_scale_crops 0.14 0.05 --max_scale_crops 1. 0.14 --use_fp16 true
  --freeze_prototypes_niters 5005 --queue_length 3840 --epoch_queue_starts 15
  --dump_path "$EXPERIMENT_PATH" "$@")
if [[ ${DRY_RUN:-0} == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  printf '\n'
  exit 0
fi
mkdir -p "$EXPERIMENT_PATH"
exec "${cmd[@]}"
