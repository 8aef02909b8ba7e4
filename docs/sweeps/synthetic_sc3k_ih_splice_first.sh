#!/bin/bash
# H100 sweep run on 2026-11-23 (one GPU, all runs at once; see README "Synthetic tasks" / "Results").
# Usage: OUT=runs/sweep bash THIS_FILE  (on a CUDA machine with the package installed)
OUT=${OUT:-runs/sweep}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
COMMON="train.precision=fp32 train.progress=false train.log_every=100 train.warmup_steps=50 train.weight_decay=0 model.selective=true"
SC="$COMMON data.test_items=1024 train.eval_every=250 train.best_metric=accuracy train.best_mode=max"
IH="$COMMON data.test_items=200 train.eval_every=250 'train.seq_len_stages=[]'"
run() { name=$1; shift; ( eval timeout 530 mamba-bio-audio synthetic "$@" --out $OUT/r_$name > $OUT/r_$name.log 2>&1; echo "$name rc=$?" ) & }
run sc_const5e3      selective-copy $SC train.steps=3000 train.lr=5e-3 train.min_lr_ratio=1
run sc_cos5e3        selective-copy $SC train.steps=3000 train.lr=5e-3 train.min_lr_ratio=0.01
run sc_cos3e3_b64    selective-copy $SC train.steps=3000 train.lr=3e-3 train.min_lr_ratio=0.01 train.batch_size=64
run sc_cos5e3_n32    selective-copy $SC train.steps=3000 train.lr=5e-3 train.min_lr_ratio=0.01 model.d_state=32
run sc_cos5e3_4k     selective-copy $SC train.steps=4000 train.lr=5e-3 train.min_lr_ratio=0.01
run sc_cos8e3        selective-copy $SC train.steps=3000 train.lr=8e-3 train.min_lr_ratio=0.01
run sc_lti_cos5e3    selective-copy $SC train.steps=3000 train.lr=5e-3 train.min_lr_ratio=0.01 model.selective=false
run ih_3k            induction-heads $IH train.steps=3000 train.lr=3e-3
run ih_3k_cos001     induction-heads $IH train.steps=3000 train.lr=3e-3 train.min_lr_ratio=0.01
run ih_5k            induction-heads $IH train.steps=5000 train.lr=3e-3
run ih_2k            induction-heads $IH train.steps=2000 train.lr=3e-3
run ih_3k_lr2e3      induction-heads $IH train.steps=3000 train.lr=2e-3
run ih_3k_b64        induction-heads $IH train.steps=3000 train.lr=3e-3 train.batch_size=64
crun() { name=$1; shift; ( eval timeout 530 mamba-bio-audio classify "$@" --out $OUT/r_$name > $OUT/r_$name.log 2>&1; echo "$name rc=$?" ) & }
SP="--config classify_splice train.precision=fp32 train.progress=false"
crun sp_3k       $SP train.steps=3000
crun sp_3k_d128  $SP train.steps=3000 model.d_model=128
crun sp_3k_l4    $SP train.steps=3000 model.n_layer=4
crun sp_5k_d128  $SP train.steps=5000 model.d_model=128 train.lr=2e-3
( timeout 540 mamba-bio-audio pretrain --config pretrain_dna_long train.progress=false --out $OUT/r_dnalong > $OUT/r_dnalong.log 2>&1; echo "dnalong rc=$?" ) &
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
wait
for f in $OUT/r_*.log; do echo "== $f"; grep -E "^\| |accuracy|bits|Error|error|Traceback" $f | tail -8; done
