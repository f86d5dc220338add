#!/usr/bin/env bash
# The CMC repository's README commands with selfsup's entry points (flags unchanged). DATA is an ImageNet-style
# folder (train/ and val/ class folders); for ImageNet-100 build it with
#   python -m selfsup.cmc.imagenet100 --imagenet /data/imagenet --output /data/imagenet100
# Usage: readme_commands.sh WHICH DATA   (WHICH: alexnet | resnet50v1 | insdis | moco | alexnet_im | moco_im |
#        probe_alexnet | probe_resnet | probe_moco); each line runs until done, with --resume auto.
set -euo pipefail
which=${1:?usage: readme_commands.sh WHICH DATA}
data=${2:?usage: readme_commands.sh WHICH DATA}
models=${MODEL_PATH:-./save_models}
case "$which" in
  # train_CMC.py, AlexNet on one GPU
  alexnet) cmc-train --batch_size 256 --num_workers 36 --data_folder "$data" --resume auto ;;
  # train_CMC.py, ResNet-50 halves on 4 GPUs (one process per GPU)
  resnet50v1) torchrun --standalone --nproc_per_node 4 -m selfsup.cmc.train --model resnet50v1 \
      --batch_size 128 --num_workers 24 --data_folder "$data" --resume auto ;;
  # train_moco_ins.py, InsDis and MoCo on 4 GPUs
  insdis) torchrun --standalone --nproc_per_node 4 -m selfsup.cmc.train_moco_ins \
      --batch_size 128 --num_workers 24 --nce_k 16384 --softmax --data_folder "$data" --resume auto ;;
  moco) torchrun --standalone --nproc_per_node 4 -m selfsup.cmc.train_moco_ins \
      --batch_size 128 --num_workers 24 --nce_k 16384 --softmax --moco --data_folder "$data" --resume auto ;;
  # the Image-Mixture fork's variants (defaults of its README: IM with g/r probability 0.1, 2 mixes each)
  alexnet_im) cmc-train --batch_size 256 --num_workers 36 --data_folder "$data" --IM --IM_type IM --resume auto ;;
  moco_im) torchrun --standalone --nproc_per_node 4 -m selfsup.cmc.train_moco_ins \
      --batch_size 128 --num_workers 24 --nce_k 16384 --softmax --moco --IM --IM_type IM \
      --data_folder "$data" --resume auto ;;
  # LinearProbing.py / eval_moco_ins.py on the last checkpoint (CKPT=path to override)
  probe_alexnet) python -m selfsup.cmc.linear --model alexnet --layer 5 --learning_rate 0.1 \
      --model_path "${CKPT:?set CKPT to the pre-trained checkpoint}" --data_folder "$data" ;;
  probe_resnet) python -m selfsup.cmc.linear --model resnet50v1 --layer 6 --learning_rate 30 \
      --model_path "${CKPT:?set CKPT}" --data_folder "$data" ;;
  probe_moco) python -m selfsup.cmc.eval_moco_ins --model resnet50 --learning_rate 10 \
      --model_path "${CKPT:?set CKPT}" --data_folder "$data" --dataset imagenet100 ;;
  *) echo "unknown WHICH: $which" >&2; exit 2 ;;
esac
echo "run folders are under $models"
