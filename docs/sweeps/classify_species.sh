#!/bin/bash
# H100 sweep run on 2026-11-23 (one GPU, fp32, up to 15 runs at once, in five batches); it chose
# the classify_species config. See README "Results" (species). Test accuracy on the 961 test windows.
# Usage: OUT=runs/sweep bash THIS_FILE  (on a CUDA machine with the package installed)
OUT=${OUT:-runs/sweep}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# OLD = the classify_species config before this sweep; every run below starts from it.
OLD="model.d_model=48 model.n_layer=2 train.steps=600 train.min_lr_ratio=0.1 train.best_metric=accuracy train.best_mode=max"
SP="train.precision=fp32 train.progress=false --no-baseline $OLD"
crun() { name=$1; shift; ( eval timeout 560 mamba-bio-audio classify "$@" --out $OUT/c_$name > $OUT/c_$name.log 2>&1 ) & }
for s in 0 1 2 3; do crun base_s$s $SP train.seed=$s; done
crun bidir $SP model.bidirectional=true
crun mlp $SP model.mlp_expand=2
crun ds64 $SP model.d_state=64
crun b32 $SP "'train.seq_len_stages=[[0,256,128],[200,1024,32]]'" train.batch_size=32
crun d48n4 $SP model.n_layer=4
crun d48n3s800 $SP model.n_layer=3 train.steps=800
crun d32n4 $SP model.d_model=32 model.n_layer=4
crun d64n3 $SP model.d_model=64 model.n_layer=3
crun d64n4 $SP model.d_model=64 model.n_layer=4
crun d64n4lr3 $SP model.d_model=64 model.n_layer=4 train.lr=3e-3
crun d96n2 $SP model.d_model=96
crun d128n2 $SP model.d_model=128 train.lr=3e-3
crun d128n4 $SP model.d_model=128 model.n_layer=4 train.lr=2e-3
crun d128n4s2400 $SP model.d_model=128 model.n_layer=4 train.steps=2400 train.lr=2e-3
crun d48n2s1200 $SP train.steps=1200
crun d64s900 $SP model.d_model=64 train.steps=900
for s in 0 1; do crun d64n4s1200_s$s $SP model.d_model=64 model.n_layer=4 train.steps=1200 train.seed=$s; done
crun u48 $SP model.backbone=unet model.n_layer=1
crun u48s1200 $SP model.backbone=unet model.n_layer=1 train.steps=1200
crun u64 $SP model.backbone=unet model.n_layer=1 model.d_model=64
crun u32n2 $SP model.backbone=unet model.n_layer=2 model.d_model=32
wait
T="$SP model.d_model=32 model.n_layer=4"
for s in 0 1 2 3; do crun d32n4s800_s$s $T train.steps=800 train.seed=$s; done
for s in 0 1 2 3; do crun d32n4s1000_s$s $T train.steps=1000 train.seed=$s; done
for s in 0 1; do crun d32n3s1000_s$s $SP model.d_model=32 model.n_layer=3 train.steps=1000 train.seed=$s; done
for s in 0 1 2; do crun d32n4s1000lr3_s$s $T train.steps=1000 train.lr=3e-3 train.seed=$s; done
wait
T="$T train.steps=1000"
L="train.best_metric=loss train.best_mode=min"
for s in 0 1 2 3; do
crun minlr_s$s $T train.seed=$s train.min_lr_ratio=0.01
crun wd3_s$s $T train.seed=$s train.min_lr_ratio=0.01 train.weight_decay=0.3
crun lossminlr_s$s $T $L train.seed=$s train.min_lr_ratio=0.01  # = the new classify_species
crun lossminlr_v500_s$s $T $L train.seed=$s train.min_lr_ratio=0.01 data.val_items=500
done
wait
for s in 0 1 2 3; do
crun lossminlr_lr3_s$s $T $L train.seed=$s train.min_lr_ratio=0.01 train.lr=3e-3
crun lossminlr_wd0_s$s $T $L train.seed=$s train.min_lr_ratio=0.01 train.weight_decay=0
done
for s in 0 1 2 3 4 5 6 7; do crun loss_s$s $T $L train.seed=$s; done
wait
for f in $OUT/c_*.log; do echo "$f $(grep -E 'test \(' $f | cut -c1-60)"; done
