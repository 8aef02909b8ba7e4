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
# `bash docs/gpu_call.sh variants` sweeps segments and sub-chunks (`bench gpu --tune`) and times the
# forward with one channel a lane (the staged kernels' layout) on channels-last inputs.
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
python3 -m pip install -q --no-deps --no-build-isolation -e . > $OUT/install.log 2>&1 || { tail $OUT/install.log; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
K=kernels/selective_scan
B="mamba-bio-audio bench gpu --layout channels-last --parts scan --graph"
SH=1x256x16384,8x2048x4096
if [ "$1" = variants ]; then  # a second call: the segment sweep, then layout variants
  timeout 330 $B --tune --tune-shapes 1x256x16384,8x256x4096 --shapes 1x256x16384 --out $OUT/tune.json > $OUT/tune.log 2>&1; echo "tune rc=$?"; grep "^tune" $OUT/tune.log
  # the forward and the segment-end pass (the first _program call of each file) with one channel a lane
  cp $K/triton_recurrent.py $K/triton_segments.py /tmp/
  for f in $K/triton_recurrent.py $K/triton_segments.py; do sed -i '0,/^ *STAGED)$/s/STAGED)$/True)/' $f; done
  grep -c "^ *True)$" $K/triton_recurrent.py $K/triton_segments.py
  timeout 90 $B --shapes $SH,1x256x131072 --out $OUT/bench_fwd_lane.json > $OUT/bench_fwd_lane.log 2>&1; echo "forward one channel a lane rc=$?"; grep -v '^{' $OUT/bench_fwd_lane.log | tail -4
  cp /tmp/triton_recurrent.py /tmp/triton_segments.py $K/
  exit 0
fi
timeout 170 $B --peer .peer/mamba_ssm_cuda --kernels --shapes 1x256x16384,8x256x4096,1x256x131072,8x2048x4096 --out $OUT/bench_new.json > $OUT/bench_new.log 2>&1; echo "bench rc=$?"
grep -v '^{' $OUT/bench_new.log | grep -v "^| peer" | tail -62
cp $K/triton_recurrent.py $K/triton_segments.py /tmp/; cp .gpu/triton_recurrent_base.py $K/triton_recurrent.py; cp .gpu/triton_segments_base.py $K/triton_segments.py; cp $K/triton_scan.py /tmp/base_scan.py
sed -i 's/^    sub = dict(SUB=p.sub_chunk) if recurrent else {}/    sub = {}/' $K/triton_scan.py  # the base backward has no sub-chunks
timeout 60 $B --shapes $SH --out $OUT/bench_base.json > $OUT/bench_base.log 2>&1; echo "base (before #15) rc=$?"; grep -v '^{' $OUT/bench_base.log | tail -3
cp /tmp/triton_recurrent.py /tmp/triton_segments.py $K/; cp /tmp/base_scan.py $K/triton_scan.py
cp $K/triton_scan.py /tmp/
for v in 8; do sed -i "s/^BWD_SUB_CHUNK = .*/BWD_SUB_CHUNK = $v/" $K/triton_scan.py
timeout 60 $B --shapes $SH --out $OUT/bench_sub$v.json > $OUT/bench_sub$v.log 2>&1; echo "sub-chunk $v rc=$?"; grep -v '^{' $OUT/bench_sub$v.log | tail -3; done
cp /tmp/triton_scan.py $K/
S=$(date +%s); timeout 140 python3 -m pytest -q -x -n 8 -m "gpu or not slow" tests/kernels -p no:cacheprovider --durations=6 > $OUT/kernel_tests.log 2>&1; echo "kernel tests rc=$? $(( $(date +%s)-S ))s"; tail -12 $OUT/kernel_tests.log
S=$(date +%s); timeout 80 python3 -m pytest -q -m gpu tests/pipelines/test_cuda_graph.py -p no:cacheprovider > $OUT/graph_tests.log 2>&1; echo "cuda graph tests rc=$? $(( $(date +%s)-S ))s"; tail -2 $OUT/graph_tests.log
