#!/bin/bash
# H100 sweep run on 2026-11-23 (one GPU, all runs at once; see README "Synthetic tasks" / "Results").
# Usage: OUT=runs/sweep bash THIS_FILE  (on a CUDA machine with the package installed)
OUT=${OUT:-runs/sweep}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
SP="--config classify_splice train.precision=fp32 train.progress=false --no-baseline train.steps=3000"
crun() { name=$1; shift; ( eval timeout 170 mamba-bio-audio classify "$@" --out $OUT/r_$name > $OUT/r_$name.log 2>&1 ) & }
for s in 0 1; do
crun base_s$s   $SP train.seed=$s
crun wd03_s$s   $SP train.seed=$s train.weight_decay=0.3
crun lr2_s$s    $SP train.seed=$s train.lr=2e-3
crun max_s$s    $SP train.seed=$s model.pooling=max
done
wait
for f in $OUT/r_*.log; do echo "$f $(grep -E 'test \(' $f)"; done
