#!/usr/bin/env bash
# Stage-2 ablations behind docs/learning.md: per dataset, one stage 1 without and one with
# augmentation, then stage-2 variants from the same encoders (simulations.ablate_stage2).
# Usage: bash benchmarks/learning/ablation.sh OUT_DIR [utd|usc] [SEED]
set -euo pipefail
out=${1:?output folder}; which=${2:-utd}; seed=${3:-0}
aug_off="stage2.augment.rotation_deg=0 stage2.augment.skeleton_rotation_deg=0 stage2.augment.scale=0 stage2.augment.jitter=0"
case $which in
  utd) base="dataset=utd-mhad label_rate=5 seed=$seed budget=cpu-utd model=compact"; rot=30 ;;
  usc) base="dataset=usc-had label_rate=1 seed=$seed budget=cpu-usc model=compact"; rot=90 ;;
  *) echo "unknown dataset $which (utd or usc)" >&2; exit 2 ;;
esac
aug_on="stage2.augment.rotation_deg=$rot stage2.augment.skeleton_rotation_deg=30 stage2.augment.scale=0.1 stage2.augment.jitter=0.05"
for s1 in plain aug; do
  stage1=$([ "$s1" = plain ] && echo "recipe=paper" || echo "")
  python -m simulations.ablate_stage2 --out "$out/$which-seed$seed-stage1-$s1" --base "$base" --stage1 "$stage1" \
    --variant train "stage2.encoder_mode=train $aug_off" \
    --variant bn_eval "stage2.encoder_mode=bn_eval $aug_off" \
    --variant frozen "stage2.encoder_mode=frozen $aug_off" \
    --variant train+aug "stage2.encoder_mode=train $aug_on" \
    --variant bn_eval+aug "stage2.encoder_mode=bn_eval $aug_on" \
    --variant frozen+aug "stage2.encoder_mode=frozen $aug_on"
done
