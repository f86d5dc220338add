#!/usr/bin/env bash
# DETR on COCO from a selfsup backbone, on one node: torchrun runs DETR's own main.py through
# selfsup.transfer.detr_train, which fills the ResNet from $WEIGHTS before the optimizer is made.
#
# Recipe: SwAV's DETR fine-tuning, i.e. DETR's defaults (300 epochs, --lr 1e-4, --lr_drop 200, --batch_size 2 per
# GPU, AdamW, frozen BN, stem and layer1 frozen) with --lr_backbone 5e-5 instead of DETR's 1e-5.
#
#   selfsup-convert detr --checkpoint runs/swav/checkpoint.pth --output swav_r50_detr.pth
#   DETR_ROOT=~/detr COCO_PATH=/data/coco WEIGHTS=swav_r50_detr.pth OUTPUT=runs/detr_swav NPROC=8 \
#       transfer/scripts/detr_coco_torchrun.sh [more DETR main.py flags, e.g. --epochs 150 --lr_drop 100]
#
# DETR_ROOT  facebookresearch/detr checkout            COCO_PATH  folder with train2017/, val2017/, annotations/
# WEIGHTS    file written by `selfsup-convert detr`    OUTPUT     DETR's --output_dir
# NPROC      GPUs on this node (default 8)              BACKBONE   DETR's --backbone (default resnet50)
# LR_BACKBONE (default 5e-5)                            AUTO_RESUME 1 (default): resume from $OUTPUT/checkpoint.pth
set -euo pipefail

: "${DETR_ROOT:?set DETR_ROOT to a facebookresearch/detr checkout}"
: "${COCO_PATH:?set COCO_PATH to the COCO folder (train2017/, val2017/, annotations/)}"
: "${WEIGHTS:?set WEIGHTS to a file written by selfsup-convert detr}"
: "${OUTPUT:?set OUTPUT to the run folder (DETR --output_dir)}"
NPROC="${NPROC:-8}"
BACKBONE="${BACKBONE:-resnet50}"
LR_BACKBONE="${LR_BACKBONE:-5e-5}"
AUTO_RESUME="${AUTO_RESUME:-1}"

resume=()
if [[ "$AUTO_RESUME" == 1 && -f "$OUTPUT/checkpoint.pth" ]]; then
  resume=(--resume "$OUTPUT/checkpoint.pth")  # DETR restores model, optimizer, scheduler and epoch
fi
mkdir -p "$OUTPUT"

exec torchrun --standalone --nproc_per_node "$NPROC" -m selfsup.transfer.detr_train \
  --detr_root "$DETR_ROOT" \
  --selfsup_weights "$WEIGHTS" \
  --backbone "$BACKBONE" \
  --lr_backbone "$LR_BACKBONE" \
  --coco_path "$COCO_PATH" \
  --output_dir "$OUTPUT" \
  ${resume[@]+"${resume[@]}"} \
  "$@"
