#!/usr/bin/env bash
# VOC07+12 varies by about 0.2 AP between runs, so MoCo reports the mean of 5 trials: run them one after another,
# then print mean and standard deviation of AP, AP50 and AP75.
#   WEIGHTS=r50.pkl GPUS=8 bash transfer/scripts/d2_voc_5_trials.sh
set -euo pipefail
: "${WEIGHTS:?set WEIGHTS to a selfsup-convert detectron2 file}"
GPUS=${GPUS:-8}
OUTPUT=${OUTPUT:-output/voc_R_50_C4_24k}
for trial in 1 2 3 4 5; do
  selfsup-transfer --config-file voc_R_50_C4_24k --num-gpus "${GPUS}" --resume \
    MODEL.WEIGHTS "${WEIGHTS}" OUTPUT_DIR "${OUTPUT}/trial${trial}" SEED "${trial}"
done
python -m selfsup.transfer.summarize "${OUTPUT}"/trial*/metrics.json
