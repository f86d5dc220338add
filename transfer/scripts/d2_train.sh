#!/usr/bin/env bash
# Fine-tune and evaluate a converted backbone with Detectron2 on one node (MoCo's protocol).
#   WEIGHTS=r50.pkl CONFIG=voc_R_50_C4_24k GPUS=8 bash transfer/scripts/d2_train.sh [KEY VALUE ...]
# CONFIG: voc_R_50_C4_24k | coco_R_50_C4_1x | coco_R_50_C4_2x | coco_R_50_FPN_1x | coco_R_50_FPN_2x (or a path).
# The shipped schedules are for 8 GPUs; with GPUS=4 the batch and lr halve and the iterations double.
# Datasets: $DETECTRON2_DATASETS/{VOC2007,VOC2012,coco} (docs/transfer.md). Extra args override the config.
set -euo pipefail
: "${WEIGHTS:?set WEIGHTS to a selfsup-convert detectron2 file}"
CONFIG=${CONFIG:-voc_R_50_C4_24k}
GPUS=${GPUS:-8}
OUTPUT=${OUTPUT:-output/${CONFIG}}
exec selfsup-transfer --config-file "${CONFIG}" --num-gpus "${GPUS}" \
  MODEL.WEIGHTS "${WEIGHTS}" OUTPUT_DIR "${OUTPUT}" "$@"
