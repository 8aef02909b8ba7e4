#!/bin/bash
# The measuring call of docs/kernel_tuning_notes.md, run on a lent GPU machine in one command:
# kernel tests (compiled, timed), `bench gpu` with mamba_ssm side by side and the per-kernel
# breakdown, then the same shapes with the kernels of a base version and with the backward in
# sub-chunks (BWD_SUB_CHUNK 8).
# Everything lands under $OUT.
#
# Before the call, on the development machine (repository root):
#   mkdir -p .peer .gpu && cp -r ../shared/peers/mamba_ssm_cuda .peer/
#   echo /.peer/ >> .git/info/exclude; echo /.gpu/ >> .git/info/exclude; echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform any -d .whl soundfile pyfaidx biopython cffi pycparser   # not in the GPU image
#   git show BASE:kernels/selective_scan/triton_recurrent.py > .gpu/triton_recurrent_base.py
#   git show BASE:kernels/selective_scan/triton_segments.py > .gpu/triton_segments_base.py
# then: device run `bash docs/gpu_call.sh` with carry [".peer", ".whl", ".gpu"]; a second call
# `bash docs/gpu_call.sh variants` sweeps segments and sub-chunks (`bench gpu --tune`). Each step's
# timeout is cut to what is left of the call's 600 s (CALL_S), so the steps at the end are the ones
# that a slow start loses.
export PYTHONUNBUFFERED=1
T0=$(date +%s); CALL_S=${CALL_S:-585}
# run a step with timeout min(its own, what is left of the call); skip it with under 20 s left
step() { local name=$1 max=$2; shift 2; local left=$(( CALL_S - $(date +%s) + T0 )); local t=$(( max < left ? max : left ))
  if [ $t -lt 20 ]; then echo "$name: skipped ($left s left)"; return; fi
  local s=$(date +%s); timeout $t "$@"; echo "$name rc=$? $(( $(date +%s) - s ))s"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
python3 -m pip install -q --no-deps --no-build-isolation -e . > $OUT/install.log 2>&1 || { tail $OUT/install.log; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
K=kernels/selective_scan
B="mamba-bio-audio bench gpu --layout channels-last --parts scan --graph"
SH=1x256x16384,8x2048x4096
show() { grep -v '^{' $OUT/$1.log | grep -v "^| peer" | tail -${2:-3}; }
if [ "$1" = variants ]; then  # a second call: the segment and sub-chunk sweep
  step tune 400 $B --tune --tune-shapes 1x256x16384,8x256x4096 --shapes 1x256x16384 --out $OUT/tune.json > $OUT/tune.log 2>&1
  grep "^tune" $OUT/tune.log
  exit 0
fi
step bench 170 $B --peer .peer/mamba_ssm_cuda --kernels --shapes 1x256x16384,8x256x4096,1x256x131072,8x2048x4096 --out $OUT/bench_new.json > $OUT/bench_new.log 2>&1
show bench_new 62
cp $K/triton_recurrent.py $K/triton_segments.py $K/triton_scan.py /tmp/
# the kernels before #15 and #17 (.gpu/*_base.py, commit 4ee3bb4; their backward has no sub-chunks)
cp .gpu/triton_recurrent_base.py $K/triton_recurrent.py; cp .gpu/triton_segments_base.py $K/triton_segments.py
sed -i 's/^    sub = dict(SUB=p.sub_chunk) if recurrent else {}/    sub = {}/' $K/triton_scan.py
step "base (before #15, #17)" 60 $B --shapes $SH --out $OUT/bench_base.json > $OUT/bench_base.log 2>&1; show bench_base
cp /tmp/triton_recurrent.py /tmp/triton_segments.py /tmp/triton_scan.py $K/
# the backward in sub-chunks of 8 steps (#16)
sed -i "s/^BWD_SUB_CHUNK = .*/BWD_SUB_CHUNK = 8/" $K/triton_scan.py
step "sub-chunk 8" 60 $B --shapes $SH --out $OUT/bench_sub8.json > $OUT/bench_sub8.log 2>&1; show bench_sub8
cp /tmp/triton_scan.py $K/
step "kernel tests" 140 python3 -m pytest -q -x -n 8 -m "gpu or not slow" tests/kernels -p no:cacheprovider --durations=6 > $OUT/kernel_tests.log 2>&1; tail -12 $OUT/kernel_tests.log
step "cuda graph tests" 80 python3 -m pytest -q -m gpu tests/pipelines/test_cuda_graph.py -p no:cacheprovider > $OUT/graph_tests.log 2>&1; tail -2 $OUT/graph_tests.log
# the forward and the segment-end pass (the first _program call of each file) with one channel a
# lane, the staged kernels' layout (compile_check: 237 -> 218 and 177 -> 162 instructions a step)
for f in $K/triton_recurrent.py $K/triton_segments.py; do sed -i '0,/^ *STAGED)$/s/STAGED)$/True)/' $f; done
step "forward one channel a lane" 60 $B --shapes $SH --out $OUT/bench_fwd_lane.json > $OUT/bench_fwd_lane.log 2>&1; show bench_fwd_lane
cp /tmp/triton_recurrent.py /tmp/triton_segments.py $K/
