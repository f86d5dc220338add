#!/usr/bin/env bash
# One command per row of the reproduction tables of the INTL README (winci-ai/INTL; spec intl.md §8) and of the
# CW-RGP rows it shows (winci-ai/CW-RGP README; spec App. A), on this machine, as the originals ran: ImageNet and
# ImageNet-100 on 8 GPUs (torchrun_single_node.sh 8 RECIPE: pre-training, linear evaluation and, for ImageNet, the
# 10 % semi-supervised one), CIFAR on one GPU (cifar.sbatch), CW-RGP on one process (cwrgp.sbatch). Under Slurm,
# submit the same files with sbatch instead. Flags are the originals'; every run restarts from its own checkpoint
# and skips finished stages, so a line can simply be run again.
# Usage: readme_commands.sh WHICH [DATA]
#   WHICH (published linear top-1, or top-1 / 5-NN):
#     ImageNet, ResNet-50, batch 256: ep100_multi-crop_ema (73.5) | ep200_multi-crop_ema (75.2) |
#       ep400_multi-crop_ema (76.1) | ep800_multi-crop_ema (76.6) | ep800 (73.1, no multi-crop / EMA)
#     small and medium: cifar10 (92.60 / 90.03) | cifar100 (70.88 / 61.90) | in100 (81.68 / 73.46)
#     CW-RGP 2: cwrgp2_cifar10 (91.92 / 89.54) | cwrgp2_cifar100 (67.51 / 57.35) | cwrgp2_stl10 (90.76 / 87.34) |
#       cwrgp2_tiny_in (49.23 / 34.04)
#     CW-RGP 4: cwrgp4_cifar10 (92.47 / 90.74) | cwrgp4_cifar100 (68.26 / 58.67) | cwrgp4_stl10 (92.04 / 88.95) |
#       cwrgp4_tiny_in (50.24 / 35.99)
#   DATA: the ImageNet root (train/, val/) for the ep* rows, the ImageNet-100 root for in100, the
#   tiny-imagenet-200 folder for *_tiny_in (all required); the torchvision root for CIFAR / STL-10 (optional:
#   selfsup's data folder by default).
#   env EXPERIMENT_PATH, PRETRAINED, STAGES, EPOCHS, DOWNLOAD as in the scripts; DRY_RUN=1 prints each command.
set -euo pipefail
which=${1:?usage: readme_commands.sh WHICH [DATA]}
data=${2:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case $which in
  ep* | in100 | cwrgp?_tiny_in) data=${data:?readme_commands.sh $which needs DATA (see the header)} ;;
esac
if [[ -n $data ]]; then
  export DATASET_PATH=$data
else
  unset DATASET_PATH
fi
case $which in
  # ImageNet, INTL with EMA target and multi-crop (--method intl_m --multi-crop), 100 / 200 / 400 / 800 epochs
  ep100_multi-crop_ema) "$here/torchrun_single_node.sh" 8 ep100_multi-crop_ema ;;
  ep200_multi-crop_ema) "$here/torchrun_single_node.sh" 8 ep200_multi-crop_ema ;;
  ep400_multi-crop_ema) "$here/torchrun_single_node.sh" 8 ep400_multi-crop_ema ;;
  ep800_multi-crop_ema) "$here/torchrun_single_node.sh" 8 ep800_multi-crop_ema ;;
  # ImageNet, plain INTL (--method intl, 2x224), 800 epochs
  ep800) "$here/torchrun_single_node.sh" 8 ep800 ;;
  # small and medium datasets: CIFAR (cifar/main.py, ResNet-18, 1000 epochs) and ImageNet-100 (ResNet-18, 400)
  cifar10) "$here/cifar.sbatch" cifar10 ;;
  cifar100) "$here/cifar.sbatch" cifar100 ;;
  in100) "$here/torchrun_single_node.sh" 8 in100 ;;
  # CW-RGP 2 (two views per image)
  cwrgp2_cifar10) "$here/cwrgp.sbatch" 2 cifar10 ;;
  cwrgp2_cifar100) "$here/cwrgp.sbatch" 2 cifar100 ;;
  cwrgp2_stl10) "$here/cwrgp.sbatch" 2 stl10 ;;
  cwrgp2_tiny_in) "$here/cwrgp.sbatch" 2 tiny_in ;;
  # CW-RGP 4 (four views per image)
  cwrgp4_cifar10) "$here/cwrgp.sbatch" 4 cifar10 ;;
  cwrgp4_cifar100) "$here/cwrgp.sbatch" 4 cifar100 ;;
  cwrgp4_stl10) "$here/cwrgp.sbatch" 4 stl10 ;;
  cwrgp4_tiny_in) "$here/cwrgp.sbatch" 4 tiny_in ;;
  *) echo "unknown WHICH: $which (see the header of readme_commands.sh)" >&2; exit 2 ;;
esac
