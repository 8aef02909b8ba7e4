#!/bin/bash
# The measuring call of docs/kernel_tuning_notes.md, run on a lent GPU machine in one command:
# `bench gpu` with mamba_ssm side by side (scan rows with the per-kernel breakdown), the same with
# the kernels of a base version and with a variant, the compiled kernel tests (timed), and the
# issue's whole-model rows.
# Everything lands under $OUT, packed at the end into one all.tgz (the device returns 8 files).
#
# Before the call, on the development machine (repository root):
#   mkdir -p .peer && cp -r ../shared/peers/mamba_ssm_cuda .peer/
#   echo /.peer/ >> .git/info/exclude; echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform any -d .whl soundfile pyfaidx biopython cffi pycparser   # not in the GPU image
#   echo /.gpu/ >> .git/info/exclude; for v in base:e48ee98 head:f261fa2; do   # before #19; before #22
#     mkdir -p .gpu/${v%%:*}; git archive ${v#*:} kernels/selective_scan | tar -x --strip-components=2 -C .gpu/${v%%:*}; done
# then: device run `bash docs/gpu_call.sh` with carry [".peer", ".whl", ".gpu"]; a second call
# `bash docs/gpu_call.sh variants` runs the side-by-side rows, the kernel tests and the sweep of tiles, segments,
# register limits and adjoint splits (`bench gpu --tune`). Each step's
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
if [ "$1" = variants ]; then  # a second call: the side-by-side rows, the kernel tests, the tile sweep
  step bench 90 $B --parts scan --peer .peer/mamba_ssm_cuda --kernels --shapes 1x256x16384,8x256x4096,1x256x131072,8x2048x4096 --out $OUT/bench.json > $OUT/bench.log 2>&1
  show bench 70
  step "kernel tests" 150 python3 -m pytest -q -x -n 8 -m "gpu or not slow" tests/kernels -p no:cacheprovider --durations=15 > $OUT/kernel_tests.log 2>&1; tail -20 $OUT/kernel_tests.log
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
# where the host time of an eager forward + backward at 1 x 256 x 16K goes (Python's profiler)
cat > /tmp/host_prof.py <<'PY'
import cProfile, pstats, torch
from mamba_bio_audio.pipelines.bench.gpu import _forward_backward, scan_inputs
from mamba_bio_audio.kernels.selective_scan.triton_scan import selective_scan_triton
x, step = scan_inputs(1, 256, 16384, 16, True, layout="channels-last"), _forward_backward(selective_scan_triton)
for _ in range(5): step(x)
torch.cuda.synchronize()
cProfile.run("for _ in range(100): step(x)", "/tmp/prof")
torch.cuda.synchronize()
pstats.Stats("/tmp/prof").sort_stats("tottime").print_stats(30)
PY
step "host profile" 30 python3 /tmp/host_prof.py > $OUT/host_prof.log 2>&1; grep -A 34 "Ordered by" $OUT/host_prof.log | cut -c1-150
mkdir -p /tmp/now && cp $K/*.py /tmp/now/
# the kernels of an earlier commit (.gpu/NAME: its kernels/selective_scan/*.py), then this one's again
kernels_of() { cp .gpu/$1/*.py $K/; }
restore() { cp /tmp/now/*.py $K/; }
# the backward before #22 (.gpu/head, commit f261fa2: the walk back not pipelined; nor #23)
kernels_of head
step "before #22" 35 $B --parts scan --kernels --shapes 1x256x16384,1x256x131072,8x2048x4096 --out $OUT/bench_head.json > $OUT/bench_head.log 2>&1; grep "^| 1 x\|^| 8 x\|_bwd_rec\|_segment_start" $OUT/bench_head.log
restore
# the backward without its register limit (before BWD_MAXNREG 168 became the default), with 8 of
# its programs an SM (2 a scheduler at 226 registers) instead of 12
maxnreg() {
  sed -i "s/^BWD_MAXNREG = .*/BWD_MAXNREG = $1/; s/^BWD_SEGMENT_PROGRAMS_PER_SM = .*/BWD_SEGMENT_PROGRAMS_PER_SM = $2/" $K/triton_scan.py
  step "maxnreg $1" 35 $B --parts scan --kernels --shapes 1x256x16384,1x256x131072,8x2048x4096 --out $OUT/bench_maxnreg$1.json > $OUT/bench_maxnreg$1.log 2>&1; grep "^| 1 x\|^| 8 x\|_bwd_rec" $OUT/bench_maxnreg$1.log
  restore; }
maxnreg None 8
# the forward loops without the L2 prefetch of their next chunk (before #24)
sed -i "s/^PREFETCH = .*/PREFETCH = tl.constexpr(False)/" $K/triton_steps.py
step "no prefetch" 35 $B --parts scan --kernels --shapes 1x256x16384,1x256x131072,8x2048x4096 --out $OUT/bench_noprefetch.json > $OUT/bench_noprefetch.log 2>&1; grep "^| 1 x\|^| 8 x\|_fwd_rec\|_segment" $OUT/bench_noprefetch.log
restore
# the segment-adjoint pass at the backward's own segmentation (before #23)
sed -i "s/^ADJOINT_SPLIT = .*/ADJOINT_SPLIT = 1/" $K/triton_scan.py
step "adjoint split 1" 35 $B --parts scan --kernels --shapes 1x256x16384,1x256x131072 --out $OUT/bench_split1.json > $OUT/bench_split1.log 2>&1; grep "^| 1 x\|_bwd_rec\|_segment_start" $OUT/bench_split1.log
restore
# the kernels before #19 and #20 (.gpu/base, commit e48ee98: inputs converted in the iteration that loads them)
kernels_of base
step "before #19, #20" 35 $B --parts scan --kernels --shapes 1x256x16384,1x256x131072,8x2048x4096 --out $OUT/bench_base.json > $OUT/bench_base.log 2>&1; grep "^| 1 x\|^| 8 x\|_rec\|_segment" $OUT/bench_base.log
restore
# the compiled kernel tests (the issue asks for under 3 minutes), slowest listed
step "kernel tests" 140 python3 -m pytest -q -x -n 8 -m "gpu or not slow" tests/kernels -p no:cacheprovider --durations=25 > $OUT/kernel_tests.log 2>&1; tail -32 $OUT/kernel_tests.log
# where the step loops stall: Nsight Compute's warp states of the backward, forward and segment-end
# kernels of one f+b at 1 x 256 x 131K (only where ncu reads counters)
step ncu 45 ncu --clock-control none -k regex:"_bwd_recurrent|_fwd_recurrent|_segment_end" -c 3 \
  --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
  python3 /tmp/one_fb.py > $OUT/ncu.log 2>&1
grep -i "stall\|warp cycles per issued\|issued warp\|eligible\|active warps\|registers per\|theoretical occ\|achieved occ\|==PROF==\|==ERROR==\|_kernel" $OUT/ncu.log | head -70
# the issue's whole-model rows, ours and with mamba_ssm's scan swapped in
step models 150 $B --parts models --peer .peer/mamba_ssm_cuda --model-rows dna-small:1x131072,audio-unet:1x131072 --out $OUT/models.json > $OUT/models.log 2>&1; grep -v '^{' $OUT/models.log | tail -8
cd $OUT && tar czf all.tgz *.json *.log && rm -f *.json *.log
