#!/bin/bash
# H100 sweep run on 2026-11-23 (one GPU, all runs at once; see README "Synthetic tasks" / "Results").
# Usage: OUT=runs/sweep bash THIS_FILE  (on a CUDA machine with the package installed)
OUT=${OUT:-runs/sweep}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
COMMON="train.precision=fp32 train.progress=false train.log_every=100 train.warmup_steps=50 train.weight_decay=0 model.selective=true"
SC="$COMMON data.test_items=1024 train.eval_every=500 train.best_metric=accuracy train.best_mode=max"
IH="$COMMON data.test_items=200 train.eval_every=250 'train.seq_len_stages=[]' train.steps=3000 train.lr=3e-3"
run() { name=$1; shift; ( eval timeout 560 mamba-bio-audio synthetic "$@" --out $OUT/r_$name > $OUT/r_$name.log 2>&1; echo "$name rc=$?" ) & }
run sc6k_const5e3     selective-copy $SC train.steps=6000 train.lr=5e-3 train.min_lr_ratio=1
run sc6k_const3e3     selective-copy $SC train.steps=6000 train.lr=3e-3 train.min_lr_ratio=1
run sc6k_const5e3_n32 selective-copy $SC train.steps=6000 train.lr=5e-3 train.min_lr_ratio=1 model.d_state=32
run sc6k_cos5e3       selective-copy $SC train.steps=6000 train.lr=5e-3 train.min_lr_ratio=0.01
run sc6k_lti          selective-copy $SC train.steps=6000 train.lr=5e-3 train.min_lr_ratio=1 model.selective=false
run ih_s1        induction-heads $IH train.seed=1
run ih_s2        induction-heads $IH train.seed=2
run ih_s3        induction-heads $IH train.seed=3
run ih_const     induction-heads $IH train.min_lr_ratio=1
run ih_n32       induction-heads $IH model.d_state=32
run ih_dt01      induction-heads $IH model.dt_max=0.01
run ih_4k        induction-heads $IH train.steps=4000
( timeout 560 mamba-bio-audio pretrain --config pretrain_dna_long train.progress=false --out $OUT/r_dnalong > $OUT/r_dnalong.log 2>&1; echo "dnalong rc=$?" ) &
wait
for f in $OUT/r_*.log; do echo "== $f"; grep -E "^\| [a-z]|accuracy|Error|Traceback" $f | tail -3; done
grep -A30 "test bits" $OUT/r_dnalong.log | head -40
