#!/bin/bash
# The measuring call of docs/kernel_tuning_notes.md, run on a lent GPU machine in one command:
# `bench gpu` with mamba_ssm side by side (scan rows with the per-kernel breakdown and the host
# time of a call), the same with the fast launch (#25) on and the kernel tests with it (it stays
# on for the later steps where they pass), earlier changes turned back (#24's prefetch of the
# segment passes, #27's folded sums, MIN_SEGMENT_CHUNKS), every default scan row and the decode
# step, then the issue's whole-model rows. Other modes, as the first argument:
#   fast      #25 and #28: the launch test, host time with the fast launch off and on, #28
#             against the rerun before it, the kernel tests with both on (about 330 s); then,
#             as time allows, FWD_UNROLL 2 and the segment carry's tile;
#   quick     the launch test and host time at one shape (a call of a minute or two);
#   variants  the side-by-side rows, the kernel tests, FWD_UNROLL 2, Nsight Compute source
#             counters of the backward and the sweep of tiles, segments, register limits and
#             adjoint splits (`bench gpu --tune`).
# Everything lands under $OUT, packed at the end into one all.tgz (the device returns 8 files).
#
# Before the call, on the development machine (repository root):
#   mkdir -p .peer && cp -r ../shared/peers/mamba_ssm_cuda .peer/
#   echo /.peer/ >> .git/info/exclude; echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform any -d .whl soundfile pyfaidx biopython cffi pycparser   # not in the GPU image
# then: device run `bash docs/gpu_call.sh [mode]` with carry [".peer", ".whl"]. Each step's
# timeout is cut to what is left of the call's 600 s (CALL_S), so the steps at the end are the ones
# that a slow start loses.
export PYTHONUNBUFFERED=1
T0=$(date +%s); CALL_S=${CALL_S:-585}; exec 3>&1  # fd 3: the call's output, past a step's redirections
# run a step with timeout min(its own, what is left of the call), stopped by SIGINT so that pytest
# still prints its summary and --durations; skip it with under 20 s left
step() { local name=$1 max=$2; shift 2; local left=$(( CALL_S - $(date +%s) + T0 )); local t=$(( max < left ? max : left ))
  if [ $t -lt 20 ]; then echo "$name: skipped ($left s left)" >&3; return; fi
  local s=$(date +%s); timeout -s INT -k 10 $t "$@"; echo "$name rc=$? $(( $(date +%s) - s ))s" >&3; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
python3 -m pip install -q --no-deps --no-build-isolation -e . > $OUT/install.log 2>&1 || { tail $OUT/install.log; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
K=kernels/selective_scan
B="mamba-bio-audio bench gpu --layout channels-last --graph"
show() { grep -v '^{' $OUT/$1.log | grep -v "^| peer" | tail -${2:-3}; }
# one f+b at 1 x 256 x 131K, channels-last bf16 (the Nsight Compute steps profile it)
cat > /tmp/one_fb.py <<'PY'
import torch
from mamba_bio_audio.kernels.selective_scan.triton_scan import selective_scan_triton
L, dim, N = 131072, 256, 16
r = lambda *s: torch.randn(*s, device="cuda")
cl = lambda x: x.to(torch.bfloat16).transpose(1, 2).requires_grad_()  # (1, L, w) memory as (1, w, L)
u, dt, z, B, C = cl(r(1, L, dim)), cl(0.1 * r(1, L, dim)), cl(r(1, L, dim)), cl(r(1, L, N)), cl(r(1, L, N))
A = (-torch.rand(dim, N, device="cuda") - 0.5).requires_grad_()
D, bias = r(dim).requires_grad_(), r(dim).requires_grad_()
y = selective_scan_triton(u, dt, A, B, C, D, z, bias, delta_softplus=True)
y.backward(torch.randn_like(y))
torch.cuda.synchronize()
PY
if [ "$1" = fast ] || [ "$1" = quick ]; then  # #25 (and with fast, #28): see the header
  S=1x256x16384,8x256x4096,1x256x131072,8x2048x4096; P="--peer .peer/mamba_ssm_cuda"
  [ "$1" = quick ] && { S=1x256x16384; P=; }
  step "launch test" 60 python3 -m pytest -q -m gpu tests/kernels/test_launch.py -p no:cacheprovider > $OUT/launch_test.log 2>&1; tail -3 $OUT/launch_test.log
  step "fast off" 60 $B --parts scan $P --kernels --shapes $S --out $OUT/bench_off.json > $OUT/bench_off.log 2>&1; grep "host time\|^| [18] x" $OUT/bench_off.log
  sed -i "s/^FAST_LAUNCH = .*/FAST_LAUNCH = True/" kernels/launch.py
  step "fast on" 60 $B --parts scan $P --kernels --shapes $S --out $OUT/bench_fast.json > $OUT/bench_fast.log 2>&1; grep "host time\|^| [18] x" $OUT/bench_fast.log
  if [ "$1" = fast ]; then
    # the backward's chunk rerun with #28 (loads 3 steps ahead, unrolled by 2), against "fast on";
    # kept on for the kernel tests
    sed -i "s/^RERUN_AHEAD = .*/RERUN_AHEAD = tl.constexpr(3)/; s/^RERUN_UNROLL = .*/RERUN_UNROLL = tl.constexpr(2)/" $K/triton_recurrent.py
    step "rerun 3 ahead" 40 $B --parts scan --kernels --shapes 1x256x16384,1x256x131072,8x2048x4096 --out $OUT/bench_rerun3.json > $OUT/bench_rerun3.log 2>&1; grep "^| 1 x\|^| 8 x\|_bwd_rec" $OUT/bench_rerun3.log
    step "kernel tests, #25 and #28 on" 110 python3 -m pytest -q -x -n 8 -m "gpu or not slow" tests/kernels -p no:cacheprovider > $OUT/tests_fast.log 2>&1; tail -3 $OUT/tests_fast.log
    # with what is left: the forward's step loop unrolled by 2, against "rerun 3 ahead"
    sed -i "s/^FWD_UNROLL = .*/FWD_UNROLL = tl.constexpr(2)/" $K/triton_recurrent.py
    step "forward unrolled" 35 $B --parts scan --kernels --shapes 1x256x16384,1x256x131072,8x2048x4096 --out $OUT/bench_fwd_unroll.json > $OUT/bench_fwd_unroll.log 2>&1; grep "^| 1 x\|^| 8 x\|_fwd_rec" $OUT/bench_fwd_unroll.log
    sed -i "s/^FWD_UNROLL = .*/FWD_UNROLL = tl.constexpr(1)/" $K/triton_recurrent.py
    # the segment carry's tile (BLOCK_D, BLOCK_S, warps; 8, 16, 4 in "rerun 3 ahead")
    for c in "4 32 4" "8 16 2" "2 64 4" "1 256 8"; do set -- $c
      sed -i "s/^CARRY_BLOCK_D, CARRY_BLOCK_S, CARRY_WARPS = .*/CARRY_BLOCK_D, CARRY_BLOCK_S, CARRY_WARPS = $1, $2, $3/" $K/triton_scan.py
      step "carry $1 $2 $3" 25 $B --parts scan --kernels --shapes 1x256x16384,1x256x131072 --out $OUT/bench_carry_$1_$2_$3.json > $OUT/bench_carry_$1_$2_$3.log 2>&1; grep "_segment_carry" $OUT/bench_carry_$1_$2_$3.log
    done
  fi
  cd $OUT && tar czf all.tgz *.log $(ls *.json 2>/dev/null) && rm -f *.json *.log
  exit 0
fi
if [ "$1" = variants ]; then  # a second call: the side-by-side rows, the kernel tests, the tile sweep
  step bench 90 $B --parts scan --peer .peer/mamba_ssm_cuda --kernels --shapes 1x256x16384,8x256x4096,1x256x131072,8x2048x4096 --out $OUT/bench.json > $OUT/bench.log 2>&1
  show bench 70
  step "kernel tests" 150 python3 -m pytest -q -x -n 8 -m "gpu or not slow" tests/kernels -p no:cacheprovider --durations=15 > $OUT/kernel_tests.log 2>&1; tail -20 $OUT/kernel_tests.log
  # the forward kernel's step loop unrolled by 2 (kernel_tuning_notes.md, "Next steps after #28")
  sed -i "s/^FWD_UNROLL = .*/FWD_UNROLL = tl.constexpr(2)/" $K/triton_recurrent.py
  step "forward unrolled" 35 $B --parts scan --kernels --shapes 1x256x16384,1x256x131072,8x2048x4096 --out $OUT/bench_fwd_unroll.json > $OUT/bench_fwd_unroll.log 2>&1; grep "^| 1 x\|^| 8 x\|_fwd_rec" $OUT/bench_fwd_unroll.log
  sed -i "s/^FWD_UNROLL = .*/FWD_UNROLL = tl.constexpr(1)/" $K/triton_recurrent.py
  # the backward's stalls by SASS line (sampled warp states; the source page as CSV)
  step "ncu source" 60 ncu --clock-control none -k regex:"_bwd_recurrent" -c 1 --section SourceCounters --section WarpStateStats \
    --page source --print-source sass --csv python3 /tmp/one_fb.py > $OUT/ncu_source.csv 2> $OUT/ncu_source.log; wc -l $OUT/ncu_source.csv; tail -3 $OUT/ncu_source.log
  step tune 270 $B --parts scan --tune --tune-shapes 1x256x16384,8x256x4096 --shapes 1x256x16384 --out $OUT/tune.json > $OUT/tune.log 2>&1
  grep "^tune" $OUT/tune.log
  cd $OUT && tar czf all.tgz *.json *.log *.csv && rm -f *.json *.log *.csv
  exit 0
fi
# the scan rows side by side with the per-kernel breakdown
step bench 90 $B --parts scan --peer .peer/mamba_ssm_cuda --kernels --shapes 1x256x16384,8x256x4096,1x256x131072,8x2048x4096 --out $OUT/bench.json > $OUT/bench.log 2>&1
show bench 70
mkdir -p /tmp/now && cp $K/*.py /tmp/now/
restore() { cp /tmp/now/*.py $K/; }
# the launches without Triton's per-call binding (#25, kernels/launch.py's FAST_LAUNCH): the host
# time of a call, the same rows, and the kernel tests with it on (the tests compare bits); kept on
# for the steps after it where the tests pass
cp kernels/launch.py /tmp/launch.py; sed -i "s/^FAST_LAUNCH = .*/FAST_LAUNCH = True/" kernels/launch.py
step "fast launch" 60 $B --parts scan --peer .peer/mamba_ssm_cuda --kernels --shapes 1x256x16384,8x256x4096,1x256x131072,8x2048x4096 --out $OUT/bench_fast.json > $OUT/bench_fast.log 2>&1; grep "^| [18] x\|host time" $OUT/bench_fast.log
step "fast launch tests" 110 python3 -m pytest -q -x -n 8 -m "gpu or not slow" tests/kernels -p no:cacheprovider > $OUT/tests_fast.log 2>&1; tail -3 $OUT/tests_fast.log
tail -1 $OUT/tests_fast.log | grep -q " passed" && ! tail -1 $OUT/tests_fast.log | grep -q "failed\|error\|interrupted" || { cp /tmp/launch.py kernels/; echo "fast launch off again"; }
grep "^FAST_LAUNCH" kernels/launch.py
# the segment passes without the L2 prefetch of their next chunk (before #24)
sed -i "s/^PREFETCH = .*/PREFETCH = tl.constexpr(False)/" $K/triton_steps.py
step "no prefetch" 35 $B --parts scan --kernels --shapes 1x256x16384,1x256x131072,8x2048x4096 --out $OUT/bench_noprefetch.json > $OUT/bench_noprefetch.log 2>&1; grep "^| 1 x\|^| 8 x\|_fwd_rec\|_bwd_rec\|_segment" $OUT/bench_noprefetch.log
restore
# the backward's dB/dC sums by tl.sum (before #27's folded butterfly)
sed -i "s/^BWD_FOLDED_SUMS = .*/BWD_FOLDED_SUMS = False/" $K/triton_scan.py
step "no folded sums" 35 $B --parts scan --kernels --shapes 1x256x16384,1x256x131072,8x2048x4096 --out $OUT/bench_nofold.json > $OUT/bench_nofold.log 2>&1; grep "^| 1 x\|^| 8 x\|_bwd_rec" $OUT/bench_nofold.log
restore
# segments of at least 4 chunks (before MIN_SEGMENT_CHUNKS 2; only 1 x 256 x 16K plans differently)
sed -i "s/^MIN_SEGMENT_CHUNKS = .*/MIN_SEGMENT_CHUNKS = 4/" $K/triton_scan.py
step "min 4 chunks" 25 $B --parts scan --kernels --shapes 1x256x16384 --out $OUT/bench_min4.json > $OUT/bench_min4.log 2>&1; grep "^| 1 x\|_fwd_rec\|_segment" $OUT/bench_min4.log
restore
# every default scan row side by side, and the decode step (the issue's table)
step "all rows" 240 $B --parts scan,decode --peer .peer/mamba_ssm_cuda --out $OUT/bench_all.json > $OUT/bench_all.log 2>&1; grep -v '^{' $OUT/bench_all.log | grep "^| \|decode\|us/step" | tail -20
# the issue's whole-model rows, ours and with mamba_ssm's scan swapped in
step models 150 $B --parts models --peer .peer/mamba_ssm_cuda --model-rows dna-small:1x131072,audio-unet:1x131072 --out $OUT/models.json > $OUT/models.log 2>&1; grep -v '^{' $OUT/models.log | tail -8
cd $OUT && tar czf all.tgz *.json *.log && rm -f *.json *.log
