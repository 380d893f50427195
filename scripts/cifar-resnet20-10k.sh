#!/usr/bin/env bash
# ResNet-20 on the first 10,000 CIFAR-10 training images, 10 epochs,
# evaluated on the full 10,000-image test set after every epoch, one run per
# multiplier, one after the other (each run uses every core).
#
# Usage (from the repository root):
#   scripts/cifar-resnet20-10k.sh [MULTIPLIER ...]     # default: fp32 mbm:7 mitchell:7 bf16
# Environment:
#   APPROXTRAIN_BIN   the binary [default: target/release/approxtrain]
#   DATA_DIR          folder holding cifar-10/ [default: ../shared/datasets]
#   OUT               results folder [default: results/cifar-resnet20]
#
# Each run writes OUT/<multiplier without ':'>/ (run.toml, metrics.csv,
# checkpoint.bin, train.log). Rerunning the script continues interrupted
# runs (--resume) and skips finished ones.
set -euo pipefail

BIN=${APPROXTRAIN_BIN:-target/release/approxtrain}
DATA_DIR=${DATA_DIR:-../shared/datasets}
OUT=${OUT:-results/cifar-resnet20}
if [ "$#" -gt 0 ]; then
  MULTIPLIERS=("$@")
else
  MULTIPLIERS=(fp32 mbm:7 mitchell:7 bf16)
fi

# The schedule, the same for every multiplier: SGD with Nesterov momentum
# 0.9, batch 64, learning rate 0.1 with one epoch of linear warm-up then
# cosine decay to zero (per step), weight decay 5e-4 on weights only,
# random crop (4-pixel padding) and horizontal flip, seed 1.
for m in "${MULTIPLIERS[@]}"; do
  dir="$OUT/${m//:/}"
  mkdir -p "$dir"
  if [ -f "$dir/run.toml" ]; then
    "$BIN" train --resume "$dir" --data-dir "$DATA_DIR" 2>&1 | tee -a "$dir/train.log"
  else
    "$BIN" train --net resnet20 --dataset cifar10 --data-dir "$DATA_DIR" \
      --multiplier "$m" --train-limit 10000 --epochs 10 \
      --batch-size 64 --optimizer sgd --lr 0.1 --momentum 0.9 --nesterov \
      --weight-decay 5e-4 --schedule cosine --warmup-epochs 1 --augment \
      --seed 1 --out "$dir" 2>&1 | tee -a "$dir/train.log"
  fi
done
