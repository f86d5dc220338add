#!/usr/bin/env bash
# cmc-train or cmc-moco-ins-train on all GPUs of one node.
# Usage: torchrun_single_node.sh NUM_GPUS {train|train_moco_ins} [flags...]
# Example: torchrun_single_node.sh 4 train --model resnet50v1 --batch_size 128 --data_folder /data/imagenet100
set -euo pipefail
ngpus=${1:?usage: torchrun_single_node.sh NUM_GPUS {train|train_moco_ins} [flags]}
entry=${2:?usage: torchrun_single_node.sh NUM_GPUS {train|train_moco_ins} [flags]}
shift 2
exec torchrun --standalone --nproc_per_node "$ngpus" -m "selfsup.cmc.$entry" --resume auto "$@"
