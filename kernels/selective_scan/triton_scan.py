"""Fused Triton selective scan (Mamba-1 / S6): forward and backward with recomputation.

Layout (one algorithm a file, as fla's ``ops/<op>/``):

- ``triton_steps.py``: the shared ``@triton.jit`` pieces (program set-up, staging a chunk's
  inputs, Δ, decay, gate).
- ``triton_recurrent.py``: variant "recurrent", one time step per loop iteration, the state in
  registers (the default: fastest on an H100, docs/kernel_tuning_notes.md).
- ``triton_tiled.py``: variant "tiled", each chunk solved at once by ``tl.associative_scan``.
- ``triton_segments.py``: parallelism along L. The sequence is cut into segments of whole chunks;
  every segment runs at once from its entry state, found by a short pass over segment boundaries
  (and the mirror image for the adjoint in backward).
- ``triton_reduce.py``: the backward's fixed-order sums of per-program partials (dB, dC, dA, dD,
  dΔ-bias), one launch.
- this file: the plan (variant, tiles, segments), the launchers (``_fwd``, ``_bwd``), the autograd
  ``SelectiveScanTriton`` and ``selective_scan_triton``.

A program owns (block of BLOCK_D channels, batch row, segment). The forward writes y, the final
state and, for backward, the state entering each chunk, (batch, n_chunks, N, dim): never a
(batch, dim, L, N) tensor. Backward reruns each chunk from its saved state. Inside the kernels
every state buffer has the channel axis last (A as (N, dim), states as (batch, ..., N, dim); see
triton_steps.py); the public shapes (A (dim, N), states (batch, dim, N)) are transposed here.

When batch x dim alone gives too few programs to fill the GPU (batch 1 at a small d_inner: the
shapes this project trains DNA and audio models at), the plan adds segments until about
SEGMENT_PROGRAMS_PER_SM programs per SM exist. Each extra segment costs one more pass over its
inputs (the local pass) and a step of the boundary pass; one segment is the plain kernel.
"""

import dataclasses
import functools
from dataclasses import dataclass

import torch

from ..launch import launch
from .triton_chunked import _bwd_chunked_kernel
from .triton_recurrent import _bwd_recurrent_kernel, _fwd_recurrent_kernel
from .triton_reduce import REDUCE_BLOCK, REDUCE_WARPS, _bwd_reduce_kernel
from .triton_segments import (
    _segment_carry_kernel,
    _segment_end_kernel,
    _segment_start_adjoint_kernel,
)
from .triton_steps import STAGE_SLOTS_D, STAGE_SLOTS_N
from .triton_tiled import _bwd_tiled_kernel, _fwd_tiled_kernel

MAX_N = 256
VARIANTS = ("recurrent", "tiled", "chunked")  # "chunked": a backward; its forward is "recurrent"
# Default tiles, from the sweeps on an H200 (docs/kernel_tuning_notes.md #8): CHUNK steps per chunk
# (shared by forward and backward: the forward saves one state per chunk), channels per program
# and warps per program, for each direction; SEGMENT_BLOCK_D channels per program where the
# sequence is cut into segments (batch x dim too small to fill the GPU) and for channels-last
# inputs (stride 1 along dim: a step's loads are then one contiguous row per program), but not for
# staged plans (time-contiguous inputs; BLOCK_D 16 measured faster, and 32 spills in backward).
CHUNK = 32
DEFAULT_VARIANT = "recurrent"
# the backward's variant where none is asked for: "recurrent", or "chunked" (triton_chunked.py,
# being measured against it: docs/kernel_tuning_notes.md #37)
BWD_VARIANT = "recurrent"
# steps a chunk where the backward is chunked (both directions: the forward saves the state
# entering each): its (CHUNK, BLOCK_D) tiles at 16 steps fit in registers with few spills
# (compile_check: 36.6 instructions a (step, state, channel), 54 spill loads/stores in its loops,
# against 39.6 and 801 at 32)
CHUNKED_CHUNK = 16
FWD_BLOCK_D, FWD_WARPS = 16, 1
BWD_BLOCK_D, BWD_WARPS = 16, 1
SEGMENT_BLOCK_D = 32
# Steps per sub-chunk of the recurrent backward (triton_recurrent.py): below CHUNK, each chunk is
# walked back in sub-chunks from a per-program scratch of SUB + CHUNK / SUB states instead of CHUNK
# (one more rerun of the chunk; docs/kernel_tuning_notes.md #16). CHUNK: no sub-chunks.
BWD_SUB_CHUNK = CHUNK
# Registers a thread of the recurrent backward may use (ptxas `.maxnreg`) where it reads
# channels-last inputs at BLOCK_D 32: 168 allows 3 warps a scheduler instead of 2 (226 registers
# unlimited), without spills (`compile_check --maxnreg 168`); other tiles spill at 168 and run
# unlimited. Only where more than UNLIMITED_BWD_PROGRAMS_PER_SM programs an SM exist: then the
# backward kernel took 10 % less time with it on an H100 (1 x 256 x 131K, 8 x 2048 x 4K), and 8 %
# more at 1 x 256 x 16K, where 1024 programs fit unlimited (docs/kernel_tuning_notes.md #21).
# None: no limit anywhere.
BWD_MAXNREG = 168
BWD_MAXNREG_BLOCK_D = 32
UNLIMITED_BWD_PROGRAMS_PER_SM = 8  # 2 one-warp programs a scheduler at 226 registers
# The recurrent backward's per-step sums over channels (dB, dC) by a folded butterfly
# (triton_steps._channel_sums: 4 shuffles a sum where tl.sum takes 12) where its tile has the
# 4 x 8 lane layout it is written for: BLOCK_D 32, BLOCK_N 16, one warp, unstaged. compile_check:
# the walk back 592 -> 565 instructions a step; the backward kernel 1.8-2.2 % faster on an H100
# (kernel_tuning_notes.md #27)
BWD_FOLDED_SUMS = True
# The recurrent backward's walk back unrolled by this factor where its registers are not limited
# (maxnreg None: few programs an SM, unstaged). `compile_check --block-d 32 --layout channels-last
# --maxnreg 0 [--walk-unroll 2]`: the walk 557 instructions a step -> 1027 for two (8 % fewer a
# step), 233 -> 255 registers (8 warps an SM either way), no spills; at 168 registers it spills in
# the loop (#28). 1: no unroll. On: the backward kernel 294.4-294.7 -> 281.4-282.0 us at
# 1 x 256 x 16K, two runs each in turns (H100, kernel_tuning_notes.md #34); no other default row
# plans it.
BWD_WALK_UNROLL = 2
# Software-pipelining depth of the recurrent kernels' step loops (`tl.range(num_stages=)`: the
# compiler prefetches the next steps' inputs through shared memory); 1 is a plain loop.
STAGES = 1
# Segments along L (measured on an H200, docs/kernel_tuning_notes.md #5-6): none where batch x dim
# alone gives NO_SEGMENTS_PROGRAMS_PER_SM programs per SM (the local pass would only add work);
# below that, segments until SEGMENT_PROGRAMS_PER_SM (forward) or BWD_SEGMENT_PROGRAMS_PER_SM
# (backward) programs per SM exist: 12 for the channels-last backward (3 a scheduler at
# BWD_MAXNREG registers), 8 for the staged one (2 a scheduler at about 235 registers).
NO_SEGMENTS_PROGRAMS_PER_SM = 7
SEGMENT_PROGRAMS_PER_SM = 16
BWD_SEGMENT_PROGRAMS_PER_SM = 12
STAGED_BWD_SEGMENT_PROGRAMS_PER_SM = 8
# The backward's segment-adjoint pass (triton_segments.py) runs each backward segment as this many
# sub-segments (more, shorter programs: the pass then has the forward's parallelism), where the
# plan picks the segments; the backward's segments then hold a multiple of it in chunks.
ADJOINT_SPLIT = 2
# a segment spans at least this many chunks (the local pass is overhead): 2, since the forward at
# 1 x 256 x 16K ran 0.116 ms with 256 segments of 2 chunks against 0.145 with 128 of 4 (H100,
# `bench gpu --tune`, docs/benchmarks.md "06:31"); other measured shapes plan the same either way
MIN_SEGMENT_CHUNKS = 2
PROGRAMS_PER_SM = 4  # still below this many programs per SM, BLOCK_D halves (down to 2)
PARTIALS_BUDGET = 2 << 30  # most bytes of deterministic dB/dC partials that a smaller BLOCK_D may cost
MAX_TILE = 8192  # most elements of one (BLOCK_D, CHUNK, BLOCK_N) register tile for large N
# the segment boundary pass (_carry), CARRY_WARPS warps a program: (boundaries, channels) a block,
# CARRY_LONG where there are more than 64 boundaries, CARRY_SHORT otherwise. Each block waits on
# its own loads and scans across lanes, so the best block depends on the boundaries: at
# 1 x 256 x 16K (255 of them) the two launches took 35.4 us with blocks of 64 x 2, 39.1 with
# 64 x 4 and 57.4 with 16 x 8; at 8 x 256 x 4K (31) 15.5 with 16 x 8, 24.8 with 32 x 8 and 34.4
# with 32 x 4 (H100, docs/kernel_tuning_notes.md #29)
CARRY_LONG, CARRY_SHORT, CARRY_WARPS = (64, 2), (16, 8), 4


def _cdiv(a: int, b: int) -> int:
    """ceil(a / b). The host code of every call uses these two rather than triton.cdiv and
    triton.next_power_of_2, whose constexpr wrappers cost about 1.5 us of host time a call."""
    return -(-a // b)


def _pow2(x: int) -> int:
    """The smallest power of two >= x (1 for x <= 1)."""
    return 1 << max(x - 1, 0).bit_length()


def _empty(*shape, like, dtype=None):
    """Uninitialised output buffer (tests swap in a NaN-filled one to catch unwritten elements)."""
    return torch.empty(*shape, device=like.device, dtype=dtype or like.dtype)


@dataclass(frozen=True)
class Plan:
    """How one direction of the scan is launched."""
    variant: str
    block_d: int
    chunk: int
    block_n: int
    chunks_per_seg: int
    n_seg: int
    num_warps: int
    stages: int = STAGES
    staged: bool = False  # recurrent kernels: each chunk's inputs copied into a stage first
    sub_chunk: int = CHUNK  # recurrent backward: steps per sub-chunk (CHUNK: none)
    maxnreg: int | None = None  # recurrent backward: register limit (BWD_MAXNREG; None: none)
    adjoint_split: int = 1  # backward: sub-segments of the segment-adjoint pass per segment
    folded_sums: bool = False  # recurrent backward: dB, dC summed by BWD_FOLDED_SUMS' butterfly
    walk_unroll: int = 1  # recurrent backward: the walk back's unroll (BWD_WALK_UNROLL)


def _folds(block_d: int, block_n: int, warps: int, staged: bool) -> bool:
    """Whether the recurrent backward's tile is the one BWD_FOLDED_SUMS' butterfly is written for
    (the 4 x 8 lane layout: BLOCK_D 32, BLOCK_N 16, one warp, unstaged)."""
    return block_d == 32 and block_n == 16 and warps == 1 and not staged


def _pow2_divisor(x: int, cap: int) -> int:
    """Largest power of two <= cap that divides x."""
    p = 1
    while p * 2 <= cap and x % (p * 2) == 0:
        p *= 2
    return p


def _sms(device) -> int:
    """Streaming multiprocessors of a CUDA device; 0 elsewhere (the interpreter: no heuristics)."""
    return _cuda_sms(device.index if device.index is not None else torch.cuda.current_device()) \
        if device.type == "cuda" else 0


@functools.lru_cache(maxsize=None)
def _cuda_sms(index: int) -> int:
    """Cached: get_device_properties costs tens of microseconds of host time a call."""
    return torch.cuda.get_device_properties(index).multi_processor_count


def plan(batch, dim, L, N, groups, device, **options) -> Plan:
    """Pick the variant, tiles and segment count for one direction of the scan.

    Explicit arguments win; None picks: BLOCK_D from the defaults (shrunk so that the
    (BLOCK_D, tile steps, BLOCK_N) register tile stays within MAX_TILE, and to divide a B/C group),
    segments along L until SEGMENT_PROGRAMS_PER_SM programs per SM exist (on a CUDA device), then
    a smaller BLOCK_D while fewer than PROGRAMS_PER_SM would run. `chunk` must be the forward's in
    backward (the saved states are per chunk). `staged` (None: for time-contiguous inputs) makes the
    recurrent kernels copy each chunk's inputs into a stage before its steps read them
    (triton_steps._stage): a step's values are then one contiguous row, which channels-last
    inputs already are.
    """
    return _plan(batch, dim, L, N, groups, _sms(device), **options)


@functools.lru_cache(maxsize=4096)
def _plan(batch, dim, L, N, groups, sms, *, backward=False, variant=None, block_d=None, chunk=None,
          segments=None, num_warps=None, stages=None, deterministic=True, channels_last=False,
          staged=None, sub_chunk=None, adjoint_split=None) -> Plan:
    """plan() for a device of `sms` SMs (0: no heuristics), cached: every call of the scan plans
    both directions, and a training step calls it with the same shapes again and again."""
    if chunk is None and (variant or BWD_VARIANT) == "chunked":
        chunk = CHUNKED_CHUNK
    variant = variant or (BWD_VARIANT if backward else DEFAULT_VARIANT)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(map(repr, VARIANTS))}, got {variant!r}")
    if sub_chunk is not None and sub_chunk < 1:
        raise ValueError(f"sub_chunk must be a positive number of steps, got {sub_chunk}")
    if adjoint_split is not None and adjoint_split < 1:
        raise ValueError(f"adjoint_split must be a positive number of sub-segments, got {adjoint_split}")
    split = adjoint_split or (ADJOINT_SPLIT if segments is None else 1)
    if variant == "chunked" and not backward:
        variant = "recurrent"
    tiled = variant == "tiled"
    stepwise = variant == "recurrent"  # the kernels with a step loop (stages, scratch, registers)
    staged = (not channels_last if staged is None else staged) and stepwise
    block_n = max(_pow2(N), 2)
    T = max(2, _pow2(chunk or CHUNK))
    bd = _pow2(block_d or (BWD_BLOCK_D if backward else FWD_BLOCK_D))
    tile_steps = T if tiled else 1
    while bd > 1 and bd * tile_steps * block_n > MAX_TILE:
        bd //= 2
    while tiled and chunk is None and not backward and T > 8 and bd * T * block_n > MAX_TILE:
        T //= 2
        tile_steps = T
    if channels_last and block_d is None and not tiled:
        bd = max(bd, SEGMENT_BLOCK_D)
    if groups > 1:
        bd = _pow2_divisor(dim // groups, bd)
    n_chunks = _cdiv(L, T)
    if segments is None and sms:
        programs = batch * _cdiv(dim, bd)
        if programs < NO_SEGMENTS_PROGRAMS_PER_SM * sms:
            if block_d is None and not tiled and not staged and groups == 1:
                bd = max(bd, SEGMENT_BLOCK_D)
                programs = batch * _cdiv(dim, bd)
            per_sm = ((STAGED_BWD_SEGMENT_PROGRAMS_PER_SM if staged else BWD_SEGMENT_PROGRAMS_PER_SM)
                      if backward else SEGMENT_PROGRAMS_PER_SM)
            target = per_sm * sms
            segments = max(1, min(target // programs, n_chunks // MIN_SEGMENT_CHUNKS))
    n_seg = max(1, min(segments or 1, n_chunks))
    chunks_per_seg = _cdiv(n_chunks, n_seg)
    if backward and n_seg > 1 and split > 1:  # whole sub-segments of the adjoint pass
        chunks_per_seg = split * _cdiv(chunks_per_seg, split)
    n_seg = _cdiv(n_chunks, chunks_per_seg)
    split = split if backward and n_seg > 1 else 1
    if block_d is None and sms and not tiled:
        partial = 2 * N * L * 4 if (backward and deterministic) else 0
        while bd > 2 and batch * n_seg * _cdiv(dim, bd) < PROGRAMS_PER_SM * sms:
            if partial and batch * _cdiv(dim, bd // 2) * partial > PARTIALS_BUDGET:
                break
            bd //= 2
    warps = num_warps or (BWD_WARPS if backward else FWD_WARPS)
    sub = min(_pow2(sub_chunk or BWD_SUB_CHUNK), T) if backward else T
    grid_programs = batch * _cdiv(dim, bd) * n_seg
    limited = (backward and stepwise and not staged and bd == BWD_MAXNREG_BLOCK_D
               and (not sms or grid_programs > UNLIMITED_BWD_PROGRAMS_PER_SM * sms))
    maxnreg = BWD_MAXNREG if limited else None
    folded = BWD_FOLDED_SUMS and backward and stepwise and _folds(bd, block_n, warps, staged)
    unroll = BWD_WALK_UNROLL if backward and stepwise and not staged and maxnreg is None else 1
    return Plan(variant, bd, T, block_n, chunks_per_seg, n_seg, warps, stages or STAGES, staged, sub,
                maxnreg, split, folded, unroll)


_BWD_KERNELS = {"recurrent": _bwd_recurrent_kernel, "tiled": _bwd_tiled_kernel,
                "chunked": _bwd_chunked_kernel}


@functools.lru_cache(maxsize=None)
def _lane_folds(p: Plan) -> dict:
    """The chunked backward's FOLDS and LANE_BITS (triton_chunked._lane_sums): one lane bit a
    power of two of BLOCK_D, folded over at most the steps of a chunk one thread holds (its
    (CHUNK, BLOCK_D) tiles spread over 32 lanes a warp, a channel a lane)."""
    lane_bits = p.block_d.bit_length() - 1
    held = max(p.chunk * p.block_d // (32 * p.num_warps), 1)
    return dict(FOLDS=min(lane_bits, held.bit_length() - 1), LANE_BITS=lane_bits,
                LOG_CHUNK=p.chunk.bit_length() - 1)


def _bc_strides(M):
    """(batch, G, N, L) strides of B or C, with G = 1 (stride 0) for (batch, N, L)."""
    if M.dim() == 3:
        return M.stride(0), 0, M.stride(1), M.stride(2)
    return M.stride(0), M.stride(1), M.stride(2), M.stride(3)


def _empty_like_io(x, dtype=None):
    """An uninitialised (batch, dim, L) output laid out in memory as x is (time-contiguous, or
    channels-last as the mixer's delta and z are), so that it is written as x is read."""
    batch, dim, L = x.shape
    if x.stride(2) == 1 and x.stride(1) >= L and x.stride(0) >= x.stride(1) * dim:
        return _empty(batch, dim, L, like=x, dtype=dtype)  # time-contiguous
    if x.stride(1) == 1 and x.stride(2) >= dim and x.stride(0) >= x.stride(2) * L:
        return _empty(batch, L, dim, like=x, dtype=dtype).transpose(1, 2)  # channels-last
    order = sorted(range(3), key=lambda i: -x.stride(i))
    out = _empty(*(x.shape[i] for i in order), like=x, dtype=dtype)
    return out.permute(*sorted(range(3), key=order.index))


def _channels_last(x) -> bool:
    """Whether a (batch, dim, L) tensor is laid out channels-last (stride 1 along dim)."""
    return x.stride(1) == 1 and x.shape[1] > 1


def _n_contiguous(M):
    """B or C with the state axis contiguous, so that a step loads its N values as one vector: a
    copy unless it already is (the mixer passes x_proj's output, (batch, L, N) in memory, as is)."""
    return M if M.stride(-2) == 1 or M.shape[-2] == 1 else M.transpose(-1, -2).contiguous().transpose(-1, -2)


def _groups(M) -> int:
    """G of B or C: 1 for (batch, N, L), M.shape[1] for (batch, G, N, L)."""
    return 1 if M.dim() == 3 else M.shape[1]


def _segment_pass_buffers(x, N, p: Plan):
    """The fp32 output of a segment-local pass, (2, batch, n_seg - 1, N, dim): its two halves
    (P, then E or mu) in one buffer that the kernels index (triton_segments._pe_half), with no
    views made of it here (each costs host time); and the pass's grid."""
    batch, dim, _ = x.shape
    out = _empty(2, batch, p.n_seg - 1, N, dim, like=x, dtype=torch.float32)
    return out, (_cdiv(dim, p.block_d), batch, p.n_seg - 1)


def _stage_buffer(x, grid, p: Plan):
    """A staged plan's stage: per program, float32 slots for one chunk of its inputs
    (triton_steps._stage_slots: four of (CHUNK, BLOCK_D), two of (CHUNK, BLOCK_N)); x otherwise
    (a placeholder the kernels do not read)."""
    if not p.staged:
        return x
    per_program = p.chunk * (STAGE_SLOTS_D.value * p.block_d + STAGE_SLOTS_N.value * p.block_n)
    return _empty(grid[0] * grid[1] * grid[2] * per_program, like=x, dtype=torch.float32)


def _scratch_floats(p: Plan) -> int:
    """Float32 scratch of one recurrent backward program (triton_recurrent): a sub-chunk's states
    and the state entering each sub-chunk, (BLOCK_N, BLOCK_D) each."""
    return (p.sub_chunk + p.chunk // p.sub_chunk) * p.block_d * p.block_n


def _stages(p: Plan):
    """The STAGES and STAGED arguments of the recurrent kernels (the tiled ones have no step loop)."""
    return dict(STAGES=p.stages, STAGED=p.staged) if p.variant == "recurrent" else {}


def _transposed(A):
    """A^T (N, dim) contiguous, as the kernels read it: a view where A is held that way
    (the mixer's A, SelectiveSSM.A), else a copy."""
    At = A.t()
    return At if At.is_contiguous() else At.contiguous()


def _as(x, dtype):
    """x in dtype: x itself where it already is (no call of .to, whose dispatch costs host time)."""
    return x if x.dtype == dtype else x.to(dtype)


def _strides(x, n=3):
    return x.stride() if x is not None else (0,) * n


def _or(x, dummy):
    return x if x is not None else dummy


def _segment_entry_states(u, delta, At, B, delta_bias, seq_idx, init, delta_softplus, p: Plan):
    """(batch, n_seg, N, dim): the state entering each segment (passes 1 and 2 of triton_segments)."""
    batch, dim, L = u.shape
    N = At.shape[0]
    groups = _groups(B)
    n_chunks = _cdiv(L, p.chunk)
    PE, grid = _segment_pass_buffers(u, N, p)
    launch(
        _segment_end_kernel, grid,
        u, delta, At, B, _or(delta_bias, u), _or(seq_idx, u), PE, _stage_buffer(u, grid, p),
        dim, L, N, dim // groups, n_chunks, p.chunks_per_seg,
        *u.stride(), *delta.stride(), *_bc_strides(B), *_strides(seq_idx, 2),
        HAS_DELTA_BIAS=delta_bias is not None, DELTA_SOFTPLUS=delta_softplus,
        HAS_SEQ_IDX=seq_idx is not None, STAGED=p.staged, BLOCK_D=p.block_d, CHUNK=p.chunk,
        BLOCK_N=p.block_n, num_warps=p.num_warps)
    return _carry(init, PE, p, reverse=False)


def _segment_exit_adjoints(delta, At, C, z, delta_bias, seq_idx, dout, dexit_last, delta_softplus,
                           p: Plan):
    """(batch, rows, N, dim): the adjoint arriving at each sub-segment's last step from its right,
    for p.adjoint_split sub-segments per segment of p (the backward reads its segments' rows,
    triton_steps._exit_row)."""
    batch, dim, L = delta.shape
    N = At.shape[0]
    groups = _groups(C)
    n_chunks = _cdiv(L, p.chunk)
    if p.chunks_per_seg % p.adjoint_split:
        raise ValueError(f"a plan's segments of {p.chunks_per_seg} chunks do not split into "
                         f"{p.adjoint_split} sub-segments")
    p = _sub_segments(p, n_chunks)
    PE, grid = _segment_pass_buffers(delta, N, p)
    launch(
        _segment_start_adjoint_kernel, grid,
        delta, At, C, _or(z, delta), _or(delta_bias, delta), _or(seq_idx, delta), dout, PE,
        _stage_buffer(delta, grid, p),
        dim, L, N, dim // groups, n_chunks, p.chunks_per_seg,
        *delta.stride(), *_bc_strides(C), *_strides(z), *_strides(seq_idx, 2), *dout.stride(),
        HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None, DELTA_SOFTPLUS=delta_softplus,
        HAS_SEQ_IDX=seq_idx is not None, STAGED=p.staged, BLOCK_D=p.block_d, CHUNK=p.chunk,
        BLOCK_N=p.block_n, num_warps=p.num_warps)
    return _carry(dexit_last, PE, p, reverse=True)


@functools.lru_cache(maxsize=4096)
def _sub_segments(p: Plan, n_chunks: int) -> Plan:
    """p with each segment cut into its p.adjoint_split sub-segments (the segment-adjoint pass's
    programs); cached, as dataclasses.replace costs host time at every call."""
    sub = p.chunks_per_seg // p.adjoint_split
    return dataclasses.replace(p, chunks_per_seg=sub, n_seg=_cdiv(n_chunks, sub))


def _carry(x0, PE, p: Plan, reverse):
    _, batch, _, N, dim = PE.shape
    out = _empty(batch, p.n_seg, N, dim, like=PE)
    bs, bd = CARRY_LONG if p.n_seg - 1 > CARRY_LONG[0] else CARRY_SHORT
    bs, bd = min(bs, _pow2(max(p.n_seg - 1, 2))), min(bd, _pow2(dim))
    launch(
        _segment_carry_kernel, (_cdiv(dim, bd), batch),
        _or(x0, PE), PE, out, dim, N, p.n_seg, HAS_X0=x0 is not None, REVERSE=reverse,
        BLOCK_D=bd, BLOCK_N=p.block_n, BLOCK_S=bs, num_warps=CARRY_WARPS)
    return out


def _fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus, write_states,
         p: Plan, At=None, write_ypre=False):
    """y, final state, chunk-entry states (or None) and y before the gate (with write_ypre, else
    None) for launch plan p. At: A^T contiguous, (N, dim), if the caller has it (the autograd
    function makes it once for both directions)."""
    batch, dim, L = u.shape
    B, C = _n_contiguous(B), _n_contiguous(C)
    N = A.shape[1]
    groups = _groups(B)
    n_chunks = _cdiv(L, p.chunk)
    At = _transposed(A) if At is None else At
    init = initial_state.transpose(1, 2).contiguous() if initial_state is not None else None
    if p.n_seg > 1:
        init = _segment_entry_states(u, delta, At, B, delta_bias, seq_idx, init, delta_softplus, p)
    y = _empty_like_io(u)
    ypre = _empty_like_io(u) if write_ypre else None
    final = _empty(batch, N, dim, like=u, dtype=torch.float32)
    states = _empty(batch, n_chunks, N, dim, like=u, dtype=torch.float32) if write_states else None
    recurrent = p.variant == "recurrent"
    grid = (_cdiv(dim, p.block_d), batch, p.n_seg)
    stage = (_stage_buffer(u, grid, p),) if recurrent else ()
    launch(
        _fwd_recurrent_kernel if recurrent else _fwd_tiled_kernel, grid,
        u, delta, At, B, C, _or(D, u), _or(z, u), _or(delta_bias, u), _or(init, u), _or(seq_idx, u),
        y, _or(ypre, u), _or(states, u), final, *stage,
        dim, L, N, dim // groups, n_chunks, p.chunks_per_seg,
        *u.stride(), *delta.stride(), *_bc_strides(B), *_bc_strides(C), *_strides(z),
        *_strides(seq_idx, 2), *y.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        DELTA_SOFTPLUS=delta_softplus, HAS_INIT=init is not None, HAS_SEQ_IDX=seq_idx is not None,
        WRITE_STATES=write_states, WRITE_YPRE=write_ypre, BLOCK_D=p.block_d, CHUNK=p.chunk,
        BLOCK_N=p.block_n, num_warps=p.num_warps, **_stages(p),
    )
    return y, final.transpose(1, 2), states, ypre  # final (batch, dim, N): a view


def _bwd(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus, states,
         dout, dfinal, deterministic, p: Plan, At=None, ypre=None):
    """Every input's gradient for launch plan p (p.chunk must be the forward's); At as in _fwd;
    ypre: y before the gate, from the forward (_fwd's write_ypre), which the chunked backward
    needs where there is a gate z."""
    batch, dim, L = u.shape
    B, C = _n_contiguous(B), _n_contiguous(C)
    N = A.shape[1]
    groups = _groups(B)
    n_chunks = states.shape[1]
    n_blocks = _cdiv(dim, p.block_d)
    dev, f32 = u.device, torch.float32
    At = _transposed(A) if At is None else At
    dexit = dfinal.transpose(1, 2).contiguous() if dfinal is not None else None
    if p.n_seg > 1:
        dexit = _segment_exit_adjoints(delta, At, C, z, delta_bias, seq_idx, dout, dexit,
                                       delta_softplus, p)
    du = _empty_like_io(u)  # ddelta and dz take du's layout: the kernel has one set of strides
    ddelta = _empty_like_io(du, dtype=delta.dtype)
    dz = _empty_like_io(du, dtype=z.dtype) if z is not None else None
    # dA, dD, dbias: one row of partials per (batch row, segment), summed below in a fixed order
    s_part = (N + 2) * dim
    part = _empty(batch * p.n_seg, s_part, like=u, dtype=f32)
    dinit = _empty(batch, N, dim, like=u, dtype=f32) if initial_state is not None else None
    # dB and dC, (2, batch, slices, L, N), N contiguous as each step writes it: one slice per
    # channel block, summed below in a fixed order (deterministic), or one per group filled by
    # atomics
    if deterministic:
        dBC = _empty(2, batch, n_blocks, L, N, like=u, dtype=f32)
    else:
        dBC = torch.zeros(2, batch, groups, L, N, device=dev, dtype=f32)
    recurrent = p.variant == "recurrent"
    grid = (n_blocks, batch, p.n_seg)
    if recurrent:
        scratch = (torch.empty(batch * p.n_seg * n_blocks * _scratch_floats(p), device=dev, dtype=f32),
                   _stage_buffer(u, grid, p))
    elif p.variant == "chunked":  # each program's float32 copy of a chunk's B and C, and g rows
        scratch = (torch.empty(batch * p.n_seg * n_blocks * p.block_n * (2 * p.chunk + p.block_d),
                               device=dev, dtype=f32),)
    else:
        scratch = ()
    if recurrent:
        sub = dict(SUB=p.sub_chunk, FOLDED_SUMS=p.folded_sums, WALK_UNROLL=p.walk_unroll)
    elif p.variant == "chunked":
        if z is not None and ypre is None:
            raise ValueError("the chunked backward needs the forward's y before the gate (ypre)")
        sub = _lane_folds(p)
    else:
        sub = {}
    launch(
        _BWD_KERNELS[p.variant], grid,
        u, delta, At, B, C, _or(D, u), _or(z, u), _or(delta_bias, u), _or(seq_idx, u),
        states, dout, _or(dexit, u), *scratch, *((_or(ypre, u),) if p.variant == "chunked" else ()),
        du, ddelta, _or(dz, u), part, dBC, _or(dinit, u),
        dim, L, N, dim // groups, n_chunks, p.chunks_per_seg, s_part,
        dexit.shape[1] if p.n_seg > 1 else 1, p.adjoint_split if p.n_seg > 1 else 1,
        *u.stride(), *delta.stride(), *_bc_strides(B), *_bc_strides(C), *_strides(z),
        *_strides(seq_idx, 2), *dout.stride(), *du.stride(),
        dBC.stride(0), dBC.stride(1), dBC.stride(2), dBC.stride(4), dBC.stride(3),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        DELTA_SOFTPLUS=delta_softplus, HAS_INIT=initial_state is not None,
        HAS_SEQ_IDX=seq_idx is not None, HAS_DEXIT=dexit is not None, DETERMINISTIC=deterministic,
        BLOCK_D=p.block_d, CHUNK=p.chunk, BLOCK_N=p.block_n, num_warps=p.num_warps, **_stages(p),
        **sub, **({"maxnreg": p.maxnreg} if p.maxnreg else {}),
    )
    # every partial summed (in a fixed order) and cast in one launch (triton_reduce.py)
    k = n_blocks // groups if deterministic else 1
    bc_shape = (groups, L, N) if B.dim() == 4 else (L, N)  # as B, (N, L) transposed
    dBC_out = _empty(2, batch, *bc_shape, like=u, dtype=B.dtype if B.dtype == C.dtype else f32)
    sums = _empty(s_part, like=u, dtype=f32)
    n_bc = dBC_out.numel()
    launch(
        _bwd_reduce_kernel, (_cdiv(n_bc, REDUCE_BLOCK) + _cdiv(s_part, REDUCE_BLOCK),),
        dBC, part, dBC_out, sums, n_bc, L * N, k, s_part, part.shape[0], dim, N,
        BLOCK=REDUCE_BLOCK, num_warps=REDUCE_WARPS)
    dB, dC = dBC_out.transpose(-1, -2)  # as B: (..., N, L)
    dA, dD, dbias = sums.split((N * dim, dim, dim))
    dA = _as(dA.view(dim, N), A.dtype)
    if dinit is not None:
        dinit = _as(dinit.transpose(1, 2), initial_state.dtype)
    dD = _as(dD, D.dtype) if D is not None else None
    dbias = _as(dbias, delta_bias.dtype) if delta_bias is not None else None
    return du, ddelta, dA, _as(dB, B.dtype), _as(dC, C.dtype), dD, dz, dbias, dinit


class SelectiveScanTriton(torch.autograd.Function):
    """Autograd wrapper: saves the inputs and the chunk-entry states, recomputes in backward."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus,
                deterministic, options):
        batch, dim, L = u.shape
        groups = _groups(B)
        p = plan(batch, dim, L, A.shape[1], groups, u.device, channels_last=_channels_last(u),
                 **options)
        B, C = _n_contiguous(B), _n_contiguous(C)
        write_states = any(ctx.needs_input_grad[:9])  # forward itself runs under no_grad
        # the chunked backward reads the forward's y before the gate (for dz) rather than sum it
        write_ypre = (write_states and z is not None
                      and (options.get("variant") or BWD_VARIANT) == "chunked")
        At = _transposed(A)
        y, final, states, ypre = _fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx,
                                      delta_softplus, write_states, p, At, write_ypre)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, states, At,
                              ypre)
        ctx.delta_softplus, ctx.deterministic = delta_softplus, deterministic
        ctx.options = dict(options, chunk=p.chunk)
        ctx.set_materialize_grads(False)
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, states, At, ypre = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros_like(u)
        batch, dim, L = u.shape
        groups = _groups(B)
        p = plan(batch, dim, L, A.shape[1], groups, u.device, backward=True,
                 deterministic=ctx.deterministic, channels_last=_channels_last(u), **ctx.options)
        grads = _bwd(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, ctx.delta_softplus,
                     states, dy, dfinal, ctx.deterministic, p, At, ypre)
        return (*grads, None, None, None, None)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          initial_state=None, return_final_state=False, seq_idx=None,
                          deterministic=True, *, variant=None, block_d=None, chunk_size=None,
                          segments=None, num_warps=None, num_stages=None, staged=None,
                          sub_chunk=None, adjoint_split=None):
    """Fused selective scan h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t, y_t = (C_t h_t + D u_t) silu(z_t).

    Same contract as ``selective_scan_ref`` (kernels/selective_scan/naive.py). Inputs are expected
    valid (the public ``selective_scan`` checks them); CUDA tensors, or CPU tensors under
    ``TRITON_INTERPRET=1``.

    Args:
        u, delta, z: (batch, dim, L) fp32/bf16/fp16.  A: (dim, N) fp32.
        B, C: (batch, N, L) or (batch, G, N, L).  D, delta_bias: (dim,) fp32.
        delta_softplus: apply softplus to delta + delta_bias.
        initial_state: (batch, dim, N) fp32, differentiable.
        return_final_state: also return the state after the last step (differentiable).
        seq_idx: (batch, L) integer; the state restarts from zero where it changes.
        deterministic: True (the default) reduces dB/dC through per-channel-block partial buffers
            summed in a fixed order, so gradients are bitwise reproducible run to run, at the cost
            of 2 x batch x (dim / BLOCK_D) x N x L fp32 of scratch memory. False accumulates with
            atomics: less memory, a little faster, but the float sums' order (and last bits)
            varies. Reproducibility is the default because training runs are compared and resumed.
        variant: "recurrent" (step by step, the default), "tiled" (associative scan per chunk) or
            "chunked" (the recurrent forward; a backward that scans each state over a chunk at once).
        block_d, chunk_size, segments, num_warps, num_stages, staged: channels per program, steps
            per chunk, segments along L (1: none), warps per program, the step loops' pipelining
            depth and whether each chunk's inputs are staged (`plan`), for both directions; None
            lets `plan` choose.
        sub_chunk: steps per sub-chunk of the recurrent backward (a power of two; chunk_size: no
            sub-chunks); None: BWD_SUB_CHUNK.
        adjoint_split: sub-segments of the backward's segment-adjoint pass per segment (the
            backward's segments then hold a multiple of it in chunks); None: ADJOINT_SPLIT where
            the plan picks the segments, else 1.
    Returns:
        y (batch, dim, L) in u's dtype, and the final state (batch, dim, N) fp32 if asked.
    """
    if A.shape[1] > MAX_N:
        raise ValueError(f"A: state size N={A.shape[1]} exceeds the Triton kernel's maximum {MAX_N}")
    options = dict(variant=variant, block_d=block_d, chunk=chunk_size, segments=segments,
                   num_warps=num_warps, stages=num_stages, staged=staged, sub_chunk=sub_chunk,
                   adjoint_split=adjoint_split)
    y, final = SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx,
                                         delta_softplus, deterministic, options)
    return (y, final.contiguous()) if return_final_state else y


__all__ = ["MAX_N", "VARIANTS", "Plan", "SelectiveScanTriton", "plan", "selective_scan_triton"]
