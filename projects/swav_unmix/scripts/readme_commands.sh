#!/usr/bin/env bash
# The commands of the Un-Mix + SwAV README (projects/swav_unmix), one per row of its reproduction table, with
# selfsup's scripts: the Slurm scripts of Un-Mix's UnMix_SwAV/for_ImageNet/scripts (unmix_swav_*_pretrain.sbatch),
# the README's single-node command (torchrun_pretrain.sh ... readme), the CIFAR scripts (cifar.sh) and the
# evaluations of the README (eval.sbatch / torchrun_eval.sh). Flags are the originals'; every run restarts from
# its own checkpoint, so a line can simply be run again.
# Usage: readme_commands.sh WHICH [DATA]
#   WHICH: 100ep | 200ep | 400ep | 800ep | 200ep_bs256 | 400ep_bs256 | 400ep_2x224 | RN50w2_400ep | RN50w4_400ep
#          (sbatch), readme (8 GPUs here), cifar10 | cifar100 (1 GPU here), linear | semisup1 | semisup10
#          (8 GPUs here, on the run of EXPERIMENT_PATH=..., or PRETRAINED=...; the network is read from the
#          checkpoint).
#   DATA: the ImageNet root (train/ and val/), for every row but cifar10/cifar100.
#   DRY_RUN=1 prints each command (sbatch lines run the script with bash to print its command).
set -euo pipefail
which=${1:?usage: readme_commands.sh WHICH [DATA]}
data=${2:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case $which in
  cifar10 | cifar100) ;;
  *) data=${data:?readme_commands.sh $which needs DATA, the ImageNet root (train/ and val/)} ;;
esac
if [[ ${DRY_RUN:-0} == 1 ]]; then
  sbatch() { bash "$@"; }
fi
case $which in
  # 64 GPUs x 64 = 4096, 2x224+6x96, no queue (SwAV baselines: 72.1 / 73.9 / 74.6 / 75.3 top-1)
  100ep) DATASET_PATH="$data" sbatch "$here/unmix_swav_100ep_pretrain.sbatch" ;;
  200ep) DATASET_PATH="$data" sbatch "$here/unmix_swav_200ep_pretrain.sbatch" ;;
  400ep) DATASET_PATH="$data" sbatch "$here/unmix_swav_400ep_pretrain.sbatch" ;;
  800ep) DATASET_PATH="$data" sbatch "$here/unmix_swav_800ep_pretrain.sbatch" ;;
  # 4 GPUs x 64 = 256 with a queue of 3840 from epoch 15 (SwAV: 72.7 / 74.3)
  200ep_bs256) DATASET_PATH="$data" sbatch "$here/unmix_swav_200ep_bs256_pretrain.sbatch" ;;
  400ep_bs256) DATASET_PATH="$data" sbatch "$here/unmix_swav_400ep_bs256_pretrain.sbatch" ;;
  # 64 GPUs x 64, 2x224 only (SwAV: 70.1)
  400ep_2x224) DATASET_PATH="$data" sbatch "$here/unmix_swav_400ep_2x224_pretrain.sbatch" ;;
  # wide ResNet-50s (SwAV: 77.3 / 77.9)
  RN50w2_400ep) DATASET_PATH="$data" sbatch "$here/unmix_swav_RN50w2_400ep_pretrain.sbatch" ;;
  RN50w4_400ep) DATASET_PATH="$data" sbatch "$here/unmix_swav_RN50w4_400ep_pretrain.sbatch" ;;
  # the Un-Mix README's single-node command: 8 GPUs x 32 = 256, 400 epochs, queue 3840 from epoch 15
  readme) DATASET_PATH="$data" "$here/torchrun_pretrain.sh" 8 readme ;;
  # for_CIFAR: ResNet-18 (Bottleneck), 400 epochs, batch 128, then the linear evaluation (90.4 / 66.1 top-1)
  cifar10) "$here/cifar.sh" cifar10 ;;
  cifar100) "$here/cifar.sh" cifar100 ;;
  # evaluations of the README: linear on frozen features; fine-tuning on 1 % / 10 % of the labels
  linear) DATASET_PATH="$data" "$here/torchrun_eval.sh" 8 linear ;;
  semisup1) DATASET_PATH="$data" "$here/torchrun_eval.sh" 8 semisup1 ;;
  semisup10) DATASET_PATH="$data" "$here/torchrun_eval.sh" 8 semisup10 ;;
  *) echo "unknown WHICH: $which" >&2; exit 2 ;;
esac
