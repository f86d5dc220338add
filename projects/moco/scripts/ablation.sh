#!/usr/bin/env bash
# The unofficial MoCo's M0-M3 ablation (README of eveningglow/MoCo): the four runs differ only in the key
# encoder's momentum and shuffle BN. Usage: ablation.sh IMAGENET_TRAIN_DIR [M0|M1|M2|M3 ...] [-- extra flags]
# On one device BN_SPLITS (default 6, the original's 6 GPUs) emulates per-GPU BN so shuffle BN matters.
set -euo pipefail
root=${1:?usage: ablation.sh IMAGENET_TRAIN_DIR [M0 M1 M2 M3] [-- extra moco-train flags]}
shift
runs=()
while [[ $# -gt 0 && $1 != "--" ]]; do runs+=("$1"); shift; done
[[ ${1:-} == "--" ]] && shift
[[ ${#runs[@]} -eq 0 ]] && runs=(M0 M1 M2 M3)
bn_splits=${BN_SPLITS:-6}
for run in "${runs[@]}"; do
  case $run in
    M0) flags=(--momentum 0 --shuffle_bn) ;;
    M1) flags=(--momentum 0.9 --shuffle_bn) ;;
    M2) flags=(--momentum 0.999) ;;
    M3) flags=(--momentum 0.999 --shuffle_bn) ;;
    *) echo "unknown run $run (expected M0, M1, M2 or M3)" >&2; exit 2 ;;
  esac
  moco-train --dataset_root "$root" "${flags[@]}" --exp_version "$run" --bn_splits "$bn_splits" --resume auto "$@"
done
