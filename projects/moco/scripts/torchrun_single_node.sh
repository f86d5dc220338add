#!/usr/bin/env bash
# MoCo on all GPUs of one node. Usage: torchrun_single_node.sh NUM_GPUS [moco-train flags...]
# Example: torchrun_single_node.sh 8 --dataset_root /data/imagenet/train --shuffle_bn --exp_version M3
set -euo pipefail
ngpus=${1:?usage: torchrun_single_node.sh NUM_GPUS [moco-train flags]}
shift
exec torchrun --standalone --nproc_per_node "$ngpus" -m selfsup.moco.train --resume auto "$@"
