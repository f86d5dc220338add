#!/usr/bin/env bash
# Reproduces Un-Mix's UnMix_SwAV/for_CIFAR/script_unmix_c10.sh and script_unmix_c100.sh: SwAV + Un-Mix on
# CIFAR-10/100 on one GPU, then the linear evaluation of for_CIFAR/eval_linear.py (100 epochs, lr 0.3 cosine,
# batch 32, wd 1e-6, 32-px crops). The original's --arch resnet18 of its CIFAR code is Bottleneck blocks
# [2,2,2,2] behind a 3x3 stride-1 stem after ConstantPad2d(1), i.e. conv padding 2 in total; here
# --arch resnet18_bottleneck --cifar_stem --stem_padding 2 (the evaluation reads the network from the checkpoint
# and asserts --arch). --data_path cifar10|cifar100 turns on the CIFAR views (colour strength 0.5, no blur,
# CIFAR mean/std); the data live in selfsup's dataset folder.
# Published linear top-1 (for_CIFAR/README.md, 400 epochs): CIFAR-10 SwAV 88.8 / +Un-Mix 90.4,
# CIFAR-100 64.5 / 66.1.
# Usage: cifar.sh {cifar10|cifar100} [extra swav-unmix-train flags]   (or: sbatch cifar.sh cifar10)
#   env EPOCHS (400; the README table has 200 to 1000; set it rather than --epochs), QUEUE (--queue_length, 120),
#   RUN_SWAV (False: Un-Mix; True: plain SwAV), EXPERIMENT_PATH (the run folder; the evaluation writes
#   ${EXPERIMENT_PATH}_linear_eval), DOWNLOAD=1 (fetch CIFAR when missing), DRY_RUN=1 (print the commands).
# Under Slurm each command runs as a one-task srun step, so SIGUSR1 (120 s before the limit) reaches the trainer:
# it writes $EXPERIMENT_PATH/checkpoint.pth.tar and requeues the job, which restarts from that file. The linear
# evaluation does not catch SIGUSR1; if the limit falls in it, submit again: it continues from its last epoch.
#SBATCH --job-name=unmix_swav_cifar
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=50G
#SBATCH --time=12:00:00
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail
dataset=${1:-}
case $dataset in
  cifar10) num_labels=10 ;;
  cifar100) num_labels=100 ;;
  *) echo "usage: cifar.sh {cifar10|cifar100} [extra swav-unmix-train flags]" >&2; exit 2 ;;
esac
shift
EPOCHS=${EPOCHS:-400}
# The original's queue_length 120 is smaller than batch x GPUs = 128, so the rule
# queue_length -= queue_length % (batch_size x world_size) makes it 0: no queue is ever used. Set QUEUE to a
# multiple of 128 (e.g. 3840) to train with one (from epoch 15).
QUEUE=${QUEUE:-120}
RUN_SWAV=${RUN_SWAV:-False}
EXPERIMENT_PATH=${EXPERIMENT_PATH:-./experiments/unmix_swav_cifar_128_resnet18_${EPOCHS}ep_100prot_${dataset}}
download=()
if [[ ${DOWNLOAD:-0} == 1 ]]; then
  download=(--download)
fi
launcher=(python -u)
if [[ -n ${SLURM_JOB_ID:-} ]]; then
  launcher=(srun --kill-on-bad-exit=1 --ntasks=1 python -u)
fi
train=("${launcher[@]}" -m selfsup.swav_unmix.train --data_path "$dataset"
  --arch resnet18_bottleneck --cifar_stem --stem_padding 2 --epochs "$EPOCHS"
  --base_lr 0.6 --final_lr 0.0006 --warmup_epochs 5 --batch_size 128 --size_crops 32 --nmb_crops 2
  --min_scale_crops 0.14 --max_scale_crops 1.0 --use_fp16 True --run_swav "$RUN_SWAV"
  --freeze_prototypes_niters 5005 --nmb_prototypes 100 --queue_length "$QUEUE" --hidden_mlp 512
  --epoch_queue_starts 15 --dump_path "$EXPERIMENT_PATH" --temperature 0.1 --epsilon 0.05 --workers 2
  ${download[@]+"${download[@]}"} "$@")
evaluate=("${launcher[@]}" -m selfsup.swav_unmix.eval_linear --num_labels "$num_labels" --crop_size 32
  --workers 2 --arch resnet18_bottleneck --data_path "$dataset" --pretrained "$EXPERIMENT_PATH/checkpoint.pth.tar"
  --dump_path "${EXPERIMENT_PATH}_linear_eval" ${download[@]+"${download[@]}"})
if [[ ${DRY_RUN:-0} == 1 ]]; then
  printf '%q ' "${train[@]}"
  printf '\n'
  printf '%q ' "${evaluate[@]}"
  printf '\n'
  exit 0
fi
mkdir -p "$EXPERIMENT_PATH"
"${train[@]}"
# A stop on SIGUSR1 also exits 0; the copy of the last epoch exists only once pre-training is complete.
if [[ ! -f $EXPERIMENT_PATH/checkpoints/ckp-$((EPOCHS - 1)).pth ]]; then
  echo "pre-training stopped before epoch $EPOCHS; the linear evaluation runs once it is complete" >&2
  exit 0
fi
mkdir -p "${EXPERIMENT_PATH}_linear_eval"
"${evaluate[@]}"
