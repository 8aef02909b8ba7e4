#!/bin/bash
# H100 sweep run on 2026-11-23 (one GPU, all runs at once; see README "Synthetic tasks" / "Results").
# Usage: OUT=runs/sweep bash THIS_FILE  (on a CUDA machine with the package installed)
OUT=${OUT:-runs/sweep}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
COMMON="train.precision=fp32 train.progress=false train.log_every=100 train.weight_decay=0 model.selective=true"
IH="$COMMON data.test_items=200 train.eval_every=250 'train.seq_len_stages=[]' train.steps=3000 train.min_lr_ratio=1"
run() { name=$1; shift; ( eval timeout 480 mamba-bio-audio synthetic "$@" --out $OUT/r_$name > $OUT/r_$name.log 2>&1; echo "$name rc=$?" ) & }
for s in 1 2 3 4; do run ih_c3_s$s induction-heads $IH train.lr=3e-3 train.warmup_steps=50 train.seed=$s; done
for s in 0 1 2; do run ih_c2_s$s induction-heads $IH train.lr=2e-3 train.warmup_steps=50 train.seed=$s; done
for s in 0 1 2; do run ih_c3w_s$s induction-heads $IH train.lr=3e-3 train.warmup_steps=300 train.seed=$s; done
for s in 0 1; do run ih_c3b64_s$s induction-heads $IH train.lr=3e-3 train.warmup_steps=50 train.batch_size=64 train.seed=$s; done
( timeout 480 python3 -m pytest -m "gpu or not slow" tests/kernels -q -x -p no:cacheprovider > $OUT/r_pytest.log 2>&1; echo "pytest rc=$?" ) &
wait
for f in $OUT/r_ih*.log; do echo "== $f"; grep -E "^\| selective" $f | tail -1; done
tail -5 $OUT/r_pytest.log
