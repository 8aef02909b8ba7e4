#!/bin/bash
# The measuring call of docs/kernel_tuning_notes.md, run on a lent GPU machine in one command:
# `bench gpu` with mamba_ssm side by side (scan rows with the per-kernel breakdown and the host
# time of a call), the compiled kernel tests, every default scan row and the decode step, then the
# issue's whole-model rows. The other mode, as the first argument:
#   variants  the side-by-side rows, the kernel tests, Nsight Compute source counters of the
#             backward and the sweep of tiles, segments, register limits and adjoint splits
#             (`bench gpu --tune`);
#   host      the fast launch (kernels/launch.py) off and on, twice each, alternating: the host
#             time of a scan call and the eager model rows, mamba_ssm beside them (about 240 s);
#   warps     the backward with one and two warps a program (the plan's other choices kept), in
#             turns, twice each: graph-timed forward and f+b at 1 x 256 x 16K, 8 x 256 x 4K and
#             1 x 256 x 131K (kernel_tuning_notes.md, "Next steps after #35"; about 100 s);
#   chunked   the chunked backward (triton_chunked.py) against the recurrent one: graph-timed
#             forward and f+b and the backward kernel's time at 1 x 256 x 16K, 8 x 256 x 4K, 131K
#             and 8 x 2048 x 4K, in turns, twice, then its compiled tests (about 300 s);
#   tune S    `bench gpu --tune` at the shapes S (e.g. 8x2048x1024), mamba_ssm beside them;
#   ab        ab.patch's base against the tree (host time and eager model rows, in turns,
#             twice), then the record call;
#   profile   where the host time of an eager forward + backward goes, ours and mamba_ssm's
#             (cProfile and torch.profiler's CPU ops at 1 x 256 x 16K and 8 x 256 x 4K).
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
# that a slow start loses. An A/B step (a change against its absence, in one call) edits a copy's
# constant with sed, as the calls recorded in docs/benchmarks.md did.
export PYTHONUNBUFFERED=1
T0=$(date +%s); CALL_S=${CALL_S:-585}; exec 3>&1  # fd 3: the call's output, past a step's redirections
# run a step with timeout min(its own, what is left of the call), stopped by SIGINT so that pytest
# still prints its summary and --durations; skip it with under 20 s left
step() { local name=$1 max=$2; shift 2; local left=$(( CALL_S - $(date +%s) + T0 )); local t=$(( max < left ? max : left ))
  if [ $t -lt 20 ]; then echo "$name: skipped ($left s left)" >&3; return; fi
  local s=$(date +%s); timeout -s INT -k 10 $t "$@"; echo "$name rc=$? $(( $(date +%s) - s ))s" >&3; }
# a module constant set to each of VALUES in turn, twice, each time one `bench gpu` run:
# turns NAME FILE CONSTANT LIMIT_S GREP_PATTERN "VALUES" BENCH_ARGS...; logs and JSON as NAME_VALUE_RUN
turns() { local name=$1 file=$2 const=$3 max=$4 pattern=$5 values=$6; shift 6
  for i in 1 2; do for v in $values; do
    sed -i "s/^$const = .*/$const = $v/" $file
    step "$name $v, run $i" $max $B "$@" --out $OUT/${name}_${v}_$i.json > $OUT/${name}_${v}_$i.log 2>&1
    grep "$pattern" $OUT/${name}_${v}_$i.log
  done; done; }
# pack what the globs (quoted, expanded in $OUT) match into $OUT/all.tgz and end the call
pack() { cd $OUT && tar czf all.tgz $1 && rm -f $1; exit 0; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
python3 -m pip install -q --no-deps --no-build-isolation -e . > $OUT/install.log 2>&1 || { tail $OUT/install.log; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
# SET="NAME=VALUE ...": module constants of kernels/launch.py or triton_scan.py set for this call
# (e.g. what an A/B call just found, before the record call; the tree's defaults otherwise)
for kv in $SET; do f=kernels/selective_scan/triton_scan.py; grep -q "^${kv%%=*} = " kernels/launch.py && f=kernels/launch.py
  sed -i "s/^${kv%%=*} = .*/${kv%%=*} = ${kv#*=}/" $f; grep -H "^${kv%%=*} = " $f || { echo "SET: no constant ${kv%%=*}"; exit 1; }; done
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
if [ "$1" = profile ]; then  # where the host time of an eager f+b goes (cProfile, torch.profiler CPU ops)
  cat > /tmp/host_prof.py <<'PY'
import cProfile, functools, pstats, sys, torch
from torch.profiler import ProfilerActivity, profile
from mamba_bio_audio.pipelines.bench.gpu import (_forward_backward, _time_contiguous, host_us,
                                                 load_peer, scan_inputs)
from mamba_bio_audio.kernels.selective_scan.triton_scan import selective_scan_triton
import mamba_bio_audio.kernels.launch as launch
batch, dim, L = map(int, sys.argv[1].split("x"))
x = scan_inputs(batch, dim, L, 16, True, layout="channels-last")
steps = {"ours": functools.partial(_forward_backward(selective_scan_triton), x),
         "peer": functools.partial(_forward_backward(load_peer(".peer/mamba_ssm_cuda")), _time_contiguous(x))}
for name, step in steps.items():
    for _ in range(5): step()
print("host us", host_us(steps, iters=50))
for name, step in steps.items():
    torch.cuda.synchronize()
    pr = cProfile.Profile()
    for _ in range(100):
        torch.cuda.synchronize(); pr.enable(); step(); pr.disable()
    torch.cuda.synchronize()
    print(f"== {name}: cProfile of 100 calls, by own time"); pstats.Stats(pr).sort_stats("tottime").print_stats(30)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(50):
            torch.cuda.synchronize(); step()
    print(f"== {name}: torch.profiler CPU ops of 50 calls")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
print("fast-launch keys", {k.fn.__name__: len(v) for k, v in launch._known.items()})
PY
  for shape in 1x256x16384 8x256x4096; do
    step "profile $shape" 120 python3 /tmp/host_prof.py $shape > $OUT/prof_$shape.log 2>&1; grep "host us\|keys" $OUT/prof_$shape.log
  done
  pack "*.log"
fi
if [ "$1" = host ]; then  # is #25's gain larger than the host's own variation? (notes, after #29)
  turns host kernels/launch.py FAST_LAUNCH 70 "host time\|^| dna\|^| audio" "False True" --parts scan,models --peer .peer/mamba_ssm_cuda --kernels --shapes 1x256x16384,8x256x4096 --model-rows dna-small:1x131072,audio-unet:1x131072
  pack "*.json *.log"
fi
if [ "$1" = variants ]; then  # a second call: the side-by-side rows, the kernel tests, the tile sweep
  step bench 90 $B --parts scan --peer .peer/mamba_ssm_cuda --kernels --shapes 1x256x16384,8x256x4096,1x256x131072,8x2048x4096 --out $OUT/bench.json > $OUT/bench.log 2>&1
  show bench 70
  step "kernel tests" 150 python3 -m pytest -q -x -n 8 -m "gpu or not slow" tests/kernels -p no:cacheprovider --durations=15 > $OUT/kernel_tests.log 2>&1; tail -20 $OUT/kernel_tests.log
  # the backward's stalls by SASS line (sampled warp states; the source page as CSV)
  step "ncu source" 60 ncu --clock-control none -k regex:"_bwd_recurrent" -c 1 --section SourceCounters --section WarpStateStats \
    --page source --print-source sass --csv python3 /tmp/one_fb.py > $OUT/ncu_source.csv 2> $OUT/ncu_source.log; wc -l $OUT/ncu_source.csv; tail -3 $OUT/ncu_source.log
  step tune 270 $B --parts scan --tune --tune-shapes 1x256x16384,8x256x4096 --shapes 1x256x16384 --out $OUT/tune.json > $OUT/tune.log 2>&1
  grep "^tune" $OUT/tune.log
  pack "*.json *.log *.csv"
fi
if [ "$1" = warps ]; then  # more warps a scheduler for the latency-bound walk back: 2 warps a
  # backward program (Triton splits the 16 x 32 tile's states across them), by patching plan()
  cat > /tmp/warps.py <<'PY'
import torch
from mamba_bio_audio.kernels.selective_scan import triton_scan as ts
from mamba_bio_audio.pipelines.bench.gpu import _graph_times, scan_inputs
plan, W = ts.plan, {"w": 1}
def patched(*a, backward=False, **k):
    if backward:
        k["num_warps"] = W["w"]
    return plan(*a, backward=backward, **k)
ts.plan = patched
for shape in [(1, 256, 16384), (8, 256, 4096), (1, 256, 131072)]:
    x = scan_inputs(*shape, 16, True, layout="channels-last")
    for w in (1, 2, 1, 2):
        W["w"] = w
        p = plan(*shape, 16, 1, torch.device("cuda"), backward=True, channels_last=True, num_warps=w)
        fwd, fb = _graph_times(ts.selective_scan_triton, x)
        print(f"| {shape} | {w} | {p.block_d} | {p.n_seg} | {p.maxnreg} | {fwd:.4f} | {fb:.4f} |", flush=True)
PY
  echo "| batch, dim, L | backward warps | BLOCK_D | segments | maxnreg | fwd ms, graph | f+b ms, graph |"
  step warps 150 python3 /tmp/warps.py > $OUT/warps.log 2>&1; grep "^|" $OUT/warps.log; tail -3 $OUT/warps.log
  pack "*.log"
fi
if [ "$1" = chunked ]; then  # the chunked backward (triton_chunked.py) against the recurrent one:
  # graph-timed forward and f+b and the backward kernel's own time, in turns (rows printed as they
  # come, so that a call cut short still reports them), then its compiled tests
  cat > /tmp/variant.py <<'PY'
import functools, sys, torch
from mamba_bio_audio.kernels.selective_scan.triton_scan import selective_scan_triton
from mamba_bio_audio.pipelines.bench.gpu import _forward_backward, _graph_times, kernel_times, scan_inputs
for shape in [(1, 256, 16384), (8, 256, 4096), (1, 256, 131072), (8, 2048, 4096)]:
    x = scan_inputs(*shape, 16, True, layout="channels-last")
    for v in ("recurrent", "chunked") * 2:
        fn = functools.partial(selective_scan_triton, variant=v)
        fwd, fb = _graph_times(fn, x)
        ks = kernel_times(functools.partial(_forward_backward(fn), x), iters=5)
        bwd = [(n, us) for n, _, us in ks if "_bwd_" in n and "reduce" not in n]
        print(f"| {shape} | {v} | {fwd:.4f} | {fb:.4f} | {bwd[0][1] if bwd else float('nan'):.1f} |", flush=True)
PY
  echo "| batch, dim, L | backward variant | fwd ms, graph | f+b ms, graph | backward kernel us |"
  step variants 400 python3 /tmp/variant.py 2>&1 | tee $OUT/chunked.log | grep "^|\|Error"
  step "chunked tests" 120 python3 -m pytest -q -x -n 8 -k chunked tests/kernels/test_scan_triton.py -p no:cacheprovider > $OUT/chunked_tests.log 2>&1; tail -3 $OUT/chunked_tests.log
  pack "*.log"
fi
if [ "$1" = tune ]; then  # the sweep of tiles, segments, register limits and adjoint splits at the
  # shapes of $2 (comma-separated), graph-timed, mamba_ssm beside each for scale
  step tune 500 $B --parts "" --peer .peer/mamba_ssm_cuda --tune --tune-shapes "$2" --out $OUT/tune.json > $OUT/tune.log 2>&1
  grep "^tune" $OUT/tune.log
  pack "*.json *.log"
fi
if [ "$1" = ab ]; then  # ab.patch (git diff BASE -- paths, untracked, carried with the tree) undone and
  # redone in turns, twice: the host time of a scan call and the eager model rows of BASE and of
  # the tree, mamba_ssm beside them; then the record call below, on the tree
  [ -f ab.patch ] || { echo "ab: expected ab.patch at the repository root"; exit 1; }
  for i in 1 2; do for v in base tree; do
    [ $v = base ] && patch -s -R -p1 < ab.patch
    step "$v, run $i" 70 $B --parts scan,models --peer .peer/mamba_ssm_cuda --kernels --shapes 1x256x16384,8x256x4096 --model-rows dna-small:1x131072,audio-unet:1x131072 --out $OUT/ab_${v}_$i.json > $OUT/ab_${v}_$i.log 2>&1
    [ $v = base ] && patch -s -p1 < ab.patch
    grep "host time\|^| dna\|^| audio" $OUT/ab_${v}_$i.log
  done; done
fi
# the scan rows side by side with the per-kernel breakdown and the host time of a call
step bench 90 $B --parts scan --peer .peer/mamba_ssm_cuda --kernels --shapes 1x256x16384,8x256x4096,1x256x131072,8x2048x4096 --out $OUT/bench.json > $OUT/bench.log 2>&1
grep -v '^{' $OUT/bench.log | grep "^| [18] x\|host time\|_segment_carry"
step "kernel tests" 110 python3 -m pytest -x -n 8 -m "gpu or not slow" tests/kernels -p no:cacheprovider > $OUT/kernel_tests.log 2>&1; tail -c 300 $OUT/kernel_tests.log
# every default scan row side by side, and the decode step (the issue's table)
step "all rows" 240 $B --parts scan,decode --peer .peer/mamba_ssm_cuda --out $OUT/bench_all.json > $OUT/bench_all.log 2>&1; grep -v '^{' $OUT/bench_all.log | grep "^| \|decode\|us/step" | tail -20
# the issue's whole-model rows, ours and with mamba_ssm's scan swapped in
step models 150 $B --parts models --peer .peer/mamba_ssm_cuda --model-rows dna-small:1x131072,audio-unet:1x131072 --out $OUT/models.json > $OUT/models.log 2>&1; grep -v '^{' $OUT/models.log | tail -8
pack "*.json *.log"
