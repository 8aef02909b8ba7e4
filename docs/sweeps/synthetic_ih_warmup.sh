#!/bin/bash
# H100 sweep run on 2026-11-23 (one GPU, all runs at once; see README "Synthetic tasks" / "Results").
# Usage: OUT=runs/sweep bash THIS_FILE  (on a CUDA machine with the package installed)
OUT=${OUT:-runs/sweep}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
COMMON="train.precision=fp32 train.progress=false train.log_every=100 train.weight_decay=0 model.selective=true"
IH="$COMMON data.test_items=200 train.eval_every=250 'train.seq_len_stages=[]' train.lr=3e-3"
run() { name=$1; shift; ( eval timeout 400 mamba-bio-audio synthetic "$@" --out $OUT/r_$name > $OUT/r_$name.log 2>&1; echo "$name rc=$?" ) & }
for s in 0 1 2; do run w300_4k_s$s induction-heads $IH train.steps=4000 train.min_lr_ratio=1 train.warmup_steps=300 train.seed=$s; done
for s in 0 1 2; do run w300_cos_s$s induction-heads $IH train.steps=3000 train.min_lr_ratio=0.1 train.warmup_steps=300 train.seed=$s; done
for s in 0 1 2; do run w500_s$s induction-heads $IH train.steps=3000 train.min_lr_ratio=1 train.warmup_steps=500 train.seed=$s; done
for s in 3 4 5; do run w300_s$s induction-heads $IH train.steps=3000 train.min_lr_ratio=1 train.warmup_steps=300 train.seed=$s; done
wait
for f in $OUT/r_*.log; do echo "== $f"; grep -E "^\| selective" $f | tail -1; done
