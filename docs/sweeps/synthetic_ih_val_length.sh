#!/bin/bash
# H100 sweep run on 2026-11-23 (one GPU, fp32, 12 runs at once, in five batches): induction
# heads with checkpoints chosen on longer validation sequences (data.val_seq_len); it chose the
# synthetic_induction_heads config. See README "Synthetic tasks".
# Usage: OUT=runs/sweep bash THIS_FILE  (on a CUDA machine with the package installed)
OUT=${OUT:-runs/sweep}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# OLD = the synthetic_induction_heads config before this sweep (4,000 steps, validation at L=256).
OLD="train.steps=4000 data.val_items=256 data.val_seq_len=0"
IH="--config synthetic_induction_heads model.selective=true train.precision=fp32 train.progress=false train.log_every=250 data.test_items=200 $OLD"
run() { name=$1; shift; ( eval timeout 560 mamba-bio-audio synthetic induction-heads "$@" --out $OUT/r_$name > $OUT/r_$name.log 2>&1 ) & }
for s in 0 1 2; do
run s6k_s$s $IH train.seed=$s train.steps=6000
run dt4_s$s $IH train.seed=$s model.dt_min=1e-4
run v2k6k_s$s $IH train.seed=$s train.steps=6000 data.val_seq_len=2048
run v4k_s$s $IH train.seed=$s data.val_seq_len=4096 data.val_items=128
done
wait
for s in 3 4 5; do run v4k125_s$s $IH train.seed=$s data.val_seq_len=4096 data.val_items=128 train.eval_every=125; done
for s in 0 1 2; do run v8k_s$s $IH train.seed=$s data.val_seq_len=8192 data.val_items=64; done
for s in 0 1 2 3 4 5; do  # = the new synthetic_induction_heads
run v4k6k_s$s $IH train.seed=$s train.steps=6000 data.val_seq_len=4096 data.val_items=128
done
wait
for s in 0 1 2 3 4 5; do run v4k6k_lr2_s$s $IH train.seed=$s train.steps=6000 data.val_seq_len=4096 data.val_items=128 train.lr=2e-3; done
for s in 3 4 5; do run v4k6k_lr4_s$s $IH train.seed=$s train.steps=6000 data.val_seq_len=4096 data.val_items=128 train.lr=4e-3; done
for s in 0 1 2 3 4 5 6 7 8; do run v4k6k_b999_s$s $IH train.seed=$s train.steps=6000 data.val_seq_len=4096 data.val_items=128 train.beta2=0.999; done
for s in 6 7 8; do run v4k6k_s$s $IH train.seed=$s train.steps=6000 data.val_seq_len=4096 data.val_items=128; done
wait
for f in $OUT/r_*.log; do echo "$f $(grep -E '^\| selective' $f | tail -1)"; done
