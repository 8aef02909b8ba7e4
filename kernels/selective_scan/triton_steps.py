"""The `@triton.jit` pieces that every Triton scan kernel shares, written once.

A kernel program owns one batch row, a block of BLOCK_D channels and one *segment* of the sequence
(a run of whole chunks; see triton_scan.py). These helpers set such a program up and compute one
step's (or one tile's) inputs: Δ = softplus(delta + bias), the decay a = exp(Δ A) cut to zero where
seq_idx starts a new sequence, and the silu gate with its derivative.

The step-by-step kernels hold a state tile as (BLOCK_N, BLOCK_D): Triton lays the last axis across
the warp's threads, so each thread owns whole channels and their BLOCK_N states sit in its own
registers. Per-channel work (softplus, the gate, y) is then done once per channel rather than once
per (channel, state) lane, and the sum over states (y = C h) needs no cross-lane shuffles. With the
(BLOCK_D, BLOCK_N) orientation a step took ~5x the instructions (docs/kernel_tuning_notes.md #8).
"""

import os

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x log2 e): the ex2 instruction
LN2 = tl.constexpr(0.6931471805599453)  # 1 / LOG2E
# Compiled kernels take the decay from `ex2.approx.ftz` (one instruction; tl.exp2 adds a
# denormal fix-up around it). Flushing denormals is harmless here: a decay below 2^-126 leaves
# a state that is zero to float32 anyway. The CPU interpreter (TRITON_INTERPRET=1, read at
# import) has no inline assembly and uses tl.exp2.
FTZ_EXP2 = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") != "1")
# The compiled segment passes also ask L2 for the next chunk's input rows while they work on one
# (_prefetch_rows); the interpreter has no caches to fill.
PREFETCH = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") != "1")
# A program's stage (see _stage): slots for up to four per-channel inputs and for B and C.
STAGE_SLOTS_D = tl.constexpr(4)
STAGE_SLOTS_N = tl.constexpr(2)


@triton.jit
def _program(dim, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, N, dim_per_group,
             ONE_CHANNEL_PER_LANE: tl.constexpr = False):
    """This program's channels d (BLOCK_D,), state indices n (BLOCK_N,), masks (the tile mask is
    (BLOCK_N, BLOCK_D)), B/C group, batch row b and segment s (grid: channel blocks, batch rows,
    segments).

    ONE_CHANNEL_PER_LANE declares d 1-aligned, so that the compiler gives the (BLOCK_N, BLOCK_D)
    state tiles no vector accesses along the channels: each lane then holds one channel and all its
    states. With d's true alignment the tiles get 4-wide accesses, i.e. 4 channels x 4 states a
    lane, which the step loops inherit. The forward loops (the forward kernel, the segment-end
    pass) take one channel a lane in every layout: fewer instructions a step (no shuffles for
    y = C h, the per-channel work done once) and 10 % faster on an H100 (docs/kernel_tuning_notes.md
    #18). The backward loops take it only when staged: there the 4 x 8 lanes' sums over channels
    (dB, dC) are cheaper for channels-last inputs at BLOCK_D 32 (#9)."""
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    s = tl.program_id(2)
    d = pid_d.to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    if ONE_CHANNEL_PER_LANE:
        d = tl.multiple_of(d, [1])
    n = tl.arange(0, BLOCK_N).to(tl.int64)
    mask_d = d < dim
    mask_n = n < N
    group = (pid_d * BLOCK_D) // dim_per_group
    return pid_d, b, s, d, n, mask_d, mask_n, mask_n[:, None] & mask_d[None, :], group


@triton.jit
def _channel_params(A_ptr, D_ptr, delta_bias_ptr, d, n, dim, N, mask_d, mask_nd, HAS_D: tl.constexpr,
                    HAS_DELTA_BIAS: tl.constexpr):
    """A (BLOCK_N, BLOCK_D) from A^T (N, dim), A log2(e), and D and the Δ bias (BLOCK_D,) (zeros where absent)."""
    A = tl.load(A_ptr + _state_offsets(d, n, dim, N, 0), mask=mask_nd, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
    else:
        Dv = d.to(tl.float32) * 0.0
    if HAS_DELTA_BIAS:
        bias = tl.load(delta_bias_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
    else:
        bias = d.to(tl.float32) * 0.0
    return A, A * LOG2E, Dv, bias


@triton.jit
def _store_channel_partials(part_ptr, part, N, dim, dD_acc, dbias_acc, mask_d,
                            HAS_D: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr):
    """A backward program's dD and dbias partials into its row of the partials, which holds dA
    (N * dim), then dD (dim), then dbias (dim); `part` is the row's start plus the channels d
    (triton_scan._bwd sums the rows and splits them in the same order)."""
    if HAS_D:
        tl.store(part_ptr + N * dim + part, dD_acc, mask=mask_d)
    if HAS_DELTA_BIAS:
        tl.store(part_ptr + (N + 1) * dim + part, dbias_acc, mask=mask_d)


@triton.jit
def _state_offsets(d, n, dim, N, r):
    """(BLOCK_N, BLOCK_D) offsets of state r in a (rows, N, dim) buffer. Every state buffer the
    kernels read or write (A too, as (N, dim)) has the channel axis last, so that tile loads and
    stores run along the threads' axis and keep the (BLOCK_N, BLOCK_D) layout of the loops."""
    return (r * N + n[:, None]) * dim + d[None, :]


@triton.jit
def _exit_row(b, s, exit_rows, exit_split):
    """Row of the exit adjoints (batch, exit_rows, N, dim) that holds segment s's: the adjoint
    pass may cut each of the backward's segments into exit_split sub-segments (triton_scan.Plan's
    adjoint_split), and a segment's exit adjoint is then its last sub-segment's (the last
    segment's is the last row, however many sub-segments it has)."""
    return b * exit_rows + tl.minimum(s * exit_split + exit_split - 1, exit_rows - 1)


@triton.jit
def _segment_chunks(s, chunks_per_seg, n_chunks, CHUNK: tl.constexpr, L):
    """Segment s's chunks [c0, c1) and steps [t0, t1)."""
    c0 = s * chunks_per_seg
    c1 = tl.minimum(c0 + chunks_per_seg, n_chunks)
    return c0, c1, c0 * CHUNK, tl.minimum(c1 * CHUNK, L)


@triton.jit
def _exp2(x):
    """2^x, denormal results flushed to zero when compiled (FTZ_EXP2)."""
    if FTZ_EXP2:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)
    else:
        return tl.exp2(x)


@triton.jit
def _lane_swap(x, MASK: tl.constexpr):
    """x (R, W) with its columns exchanged across bit MASK: column c gets column c ^ MASK. Where
    the columns are lanes of one warp (the backward tile, _channel_sums), Triton lowers this
    gather to one `SHFL.BFLY` a register (compile_check: the same 34 shuffles a walk-back step as
    inline `shfl.sync`, which would also have tied the result to the layout Triton picks)."""
    c = tl.arange(0, x.shape[1])
    return tl.gather(x, tl.broadcast_to((c ^ MASK)[None, :], x.shape), axis=1)


@triton.jit
def _fold(x, BIT: tl.constexpr):
    """One level of a transposed butterfly over the columns of x (R, W) -> (R / 2, W): column c
    keeps the half of the rows that bit BIT of c selects, sends the other half to column
    c ^ (1 << BIT) and adds what it receives; row r of column c then holds the pair's sum for row
    r + (bit BIT of c) R / 2 of x."""
    R: tl.constexpr = x.shape[0]
    W: tl.constexpr = x.shape[1]
    lo, hi = tl.split(tl.permute(tl.reshape(x, (2, R // 2, W)), (1, 2, 0)))
    up = ((tl.arange(0, W) >> BIT) & 1)[None, :] != 0
    return tl.where(up, hi, lo) + _lane_swap(tl.where(up, lo, hi), 1 << BIT)


@triton.jit
def _channel_sums(x):
    """The sums over channels of a backward state tile x (16, 32), as (v, n, first), each (4, 8):
    v holds the sum for state n, stored once where first.

    The tile's layout (compile_check: 4 x 8 lanes, each lane 4 states x 4 adjacent channels) puts
    the channel axis on 4 registers and lane bits 0-2, so tl.sum takes 3 levels of 4 shuffles.
    Here the 4 registers are added first (the reshape to (16, 8, 4) keeps them in the thread),
    then two folds (_fold) halve the states each lane carries while they sum over lane bits 2
    and 1, and a plain exchange sums over bit 0: 4 shuffles in all. The result is the same
    whatever layout Triton picks (the exchanges are gathers); only the shuffle count assumes
    this one."""
    x = tl.sum(tl.reshape(x, (16, 8, 4)), axis=2)
    x = _fold(x, 2)  # (8, 8): state r + 8 (bit 2 of c)
    x = _fold(x, 1)  # (4, 8): state r + 4 (bit 1 of c) + 8 (bit 2 of c)
    x += _lane_swap(x, 1)
    c = tl.arange(0, 8)[None, :]
    n = tl.arange(0, 4)[:, None] + 4 * ((c >> 1) & 1) + 8 * ((c >> 2) & 1)
    return x, n, tl.broadcast_to((c & 1) == 0, x.shape)


@triton.jit
def _prefetch_rows(r, k, t0, lo, hi, CHUNK: tl.constexpr):
    """Ask L2 for one input's rows of steps t0 .. t0 + CHUNK - 1 (those in [lo, hi)), given r, the
    input's pointers at step 0 for the program's channels (or states), and k, its step stride:
    element i of r fetches row t0 + i (and t0 + i + len(r), ... up to CHUNK rows), one
    `prefetch.global.L2` each. A step loop's loads are issued an iteration or two before their
    use, which covers an L2 hit but not a trip to HBM (Nsight Compute on the backward: a quarter of
    its stall samples wait on the chunk rerun's loads); so the chunk after this one is fetched
    while this one runs. Channels-last inputs (a row of the program's channels is contiguous);
    a no-op under the interpreter. Only the segment passes use it: on an H100 it took 31-54 us off
    their sum at 1 x 256 x 131K and 8 x 2048 x 4K, and made the forward kernel 1.5-3 % and the
    backward kernel 4-5 % slower (docs/kernel_tuning_notes.md #24, #26)."""
    if PREFETCH:
        W: tl.constexpr = r.shape[0]
        i = tl.arange(0, W)
        for q in tl.static_range(0, (CHUNK + W - 1) // W):
            t = t0 + q * W + i
            ok = (t >= lo) & (t < hi) & (q * W + i < CHUNK)
            tl.inline_asm_elementwise(
                "{ .reg .pred p; setp.ne.b32 p, $2, 0; @p prefetch.global.L2 [$1]; mov.b32 $0, 0; }",
                "=r,l,r", [r + t.to(tl.int64) * k, ok.to(tl.int32)], dtype=tl.int32,
                is_pure=False, pack=1)


@triton.jit
def _prefetch_chunk(ru, ku, rdt, kdt, rB, kB, rz, kz, rdo, kdo, rC, kC, t0, lo, hi,
                    HAS_Z: tl.constexpr, HAS_DO: tl.constexpr, HAS_C: tl.constexpr,
                    CHUNK: tl.constexpr):
    """_prefetch_rows for the inputs a step loop reads (u, delta and B always; z, dout and C as
    asked), from their pointers and step strides as _chunk_inputs gives them unstaged."""
    _prefetch_rows(ru, ku, t0, lo, hi, CHUNK)
    _prefetch_rows(rdt, kdt, t0, lo, hi, CHUNK)
    _prefetch_rows(rB, kB, t0, lo, hi, CHUNK)
    if HAS_Z:
        _prefetch_rows(rz, kz, t0, lo, hi, CHUNK)
    if HAS_DO:
        _prefetch_rows(rdo, kdo, t0, lo, hi, CHUNK)
    if HAS_C:
        _prefetch_rows(rC, kC, t0, lo, hi, CHUNK)


@triton.jit
def _softplus(x):
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)


@triton.jit
def _delta(raw, mask, DELTA_SOFTPLUS: tl.constexpr):
    """Δ from delta + bias, zero where masked (so a = 1 and Δ B u = 0 there)."""
    if DELTA_SOFTPLUS:
        raw = _softplus(raw)
    return tl.where(mask, raw, 0.0)


@triton.jit
def _same_sequence(seq_base, t, L, s_seq_l):
    """Whether step t continues step t-1's sequence (True at t = 0 and past the end)."""
    inside = t < L
    s_cur = tl.load(seq_base + t * s_seq_l, mask=inside, other=0)
    s_prev = tl.load(seq_base + (t - 1) * s_seq_l, mask=inside & (t > 0), other=0)
    return (s_cur == s_prev) | (t == 0) | (~inside)


@triton.jit
def _decay(A2, dt, keep, HAS_SEQ_IDX: tl.constexpr):
    """a (BLOCK_N, BLOCK_D) = exp(Δ A) from Δ (BLOCK_D,), times keep (0 where seq_idx starts a new
    sequence) with HAS_SEQ_IDX."""
    a = _exp2(A2 * dt[None, :])
    if HAS_SEQ_IDX:
        a = a * keep
    return a


@triton.jit
def _decay_from(raw, seq_base, t, m, A2, s_seq_l, L, DELTA_SOFTPLUS: tl.constexpr,
                HAS_SEQ_IDX: tl.constexpr):
    """Δ (BLOCK_D,) and a (BLOCK_N, BLOCK_D) of step t from raw = delta + bias."""
    dt = _delta(raw, m, DELTA_SOFTPLUS)
    keep = 1.0
    if HAS_SEQ_IDX:
        keep = _same_sequence(seq_base, t, L, s_seq_l).to(tl.float32)
    return dt, _decay(A2, dt, keep, HAS_SEQ_IDX)


@triton.jit
def _stage_slots(stage_ptr, pid_d, b, s, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                 CHUNK: tl.constexpr):
    """Row 0 of each slot of this program's stage, a float32 scratch of STAGE_SLOTS_D (CHUNK, BLOCK_D)
    slots (u, delta, z, dout) and STAGE_SLOTS_N (CHUNK, BLOCK_N) slots (B, C): four (BLOCK_D,) and
    two (BLOCK_N,) pointer vectors. Programs are laid out as the grid: (segment, batch row,
    channel block), slowest first."""
    program = (s * tl.num_programs(1) + b) * tl.num_programs(0) + pid_d
    base = stage_ptr + program * (CHUNK * (STAGE_SLOTS_D * BLOCK_D + STAGE_SLOTS_N * BLOCK_N))
    x0 = base + tl.arange(0, BLOCK_D)
    n0 = base + STAGE_SLOTS_D * CHUNK * BLOCK_D + tl.arange(0, BLOCK_N)
    x_slot, n_slot = CHUNK * BLOCK_D, CHUNK * BLOCK_N
    return x0, x0 + x_slot, x0 + 2 * x_slot, x0 + 3 * x_slot, n0, n0 + n_slot


@triton.jit
def _stage(dst, src, s_l, t0, rows, mask_w, CHUNK: tl.constexpr):
    """Copy steps [t0, t0 + rows) of one input into a stage slot: `src` holds the (W,) pointers of
    step 0 and `s_l` is the step stride; `dst` (W,) is the slot's row 0 of a (CHUNK, W) float32
    slot. Rows past `rows` and masked lanes become 0, so the steps read the slot unmasked. The
    chunk is requested at once, so its loads are all in flight together: read step by step from
    global memory, each step waited on a DRAM round trip (docs/kernel_tuning_notes.md #9)."""
    i = tl.arange(0, CHUNK)
    m = (i < rows)[:, None] & mask_w[None, :]
    x = tl.load(src[None, :] + (t0 + i).to(tl.int64)[:, None] * s_l, mask=m, other=0.0)
    tl.store(dst[None, :] + i[:, None] * dst.shape[0], x.to(tl.float32))


@triton.jit
def _chunk_input(slot, src, s_l, tc, rows, mask_w, STAGED: tl.constexpr, CHUNK: tl.constexpr):
    """Where the steps of the chunk starting at step tc read one input: (pointers of step 0, step
    stride), indexed as _chunk_steps says. STAGED: the stage slot it is copied into (see _stage; the
    caller puts a barrier after its copies). Otherwise global memory itself, step by step, which is
    faster when a step's values are one contiguous row (channels-last inputs)."""
    if STAGED:
        _stage(slot, src, s_l, tc, rows, mask_w, CHUNK)
        ptr = slot
        stride = slot.shape[0]
    else:
        ptr = src
        stride = s_l
    return ptr, stride


@triton.jit
def _chunk_inputs(slots, u_base, dt_base, z_base, do_base, B_base, C_base, s_u_l, s_dt_l, s_z_l, s_do_l,
                  s_B_l, s_C_l, tc, rows, L, mask_d, mask_n, STAGED: tl.constexpr,
                  CHUNK: tl.constexpr, HAS_U: tl.constexpr, HAS_Z: tl.constexpr,
                  HAS_DO: tl.constexpr, HAS_B: tl.constexpr, HAS_C: tl.constexpr):
    """Where a kernel's steps of the chunk starting at tc read their inputs (delta and those the
    HAS_ flags name; `slots` from _stage_slots): (pointers, step stride) of u, delta, z, dout, B
    and C, then (first step index, index bound) as _chunk_steps says. Staged, the copies are fenced
    by barriers on both sides (the previous chunk's steps have read the stage; this chunk's copies
    are visible to every lane)."""
    su, sdt, sz, sdo, sB, sC = slots
    if STAGED:
        tl.debug_barrier()
    ru, ku = _chunk_input(su, u_base, s_u_l, tc, rows, mask_d, STAGED and HAS_U, CHUNK)
    rdt, kdt = _chunk_input(sdt, dt_base, s_dt_l, tc, rows, mask_d, STAGED, CHUNK)
    rz, kz = _chunk_input(sz, z_base, s_z_l, tc, rows, mask_d, STAGED and HAS_Z, CHUNK)
    rdo, kdo = _chunk_input(sdo, do_base, s_do_l, tc, rows, mask_d, STAGED and HAS_DO, CHUNK)
    rB, kB = _chunk_input(sB, B_base, s_B_l, tc, rows, mask_n, STAGED and HAS_B, CHUNK)
    rC, kC = _chunk_input(sC, C_base, s_C_l, tc, rows, mask_n, STAGED and HAS_C, CHUNK)
    if STAGED:
        tl.debug_barrier()
    k0, kb = _chunk_steps(tc, rows, L, STAGED)
    return ru, ku, rdt, kdt, rz, kz, rdo, kdo, rB, kB, rC, kC, k0, kb


@triton.jit
def _chunk_steps(tc, rows, L, STAGED: tl.constexpr):
    """(index of the chunk's first step, bound of the step indices) in what _chunk_input gives."""
    if STAGED:
        first = 0
        bound = rows
    else:
        first = tc
        bound = L
    return first, bound


@triton.jit
def _step_loads(u_base, dt_base, B_base, C_base, z_base, t, mask_d, mask_n, s_u_l, s_dt_l, s_B_l,
                s_C_l, s_z_l, L, HAS_C: tl.constexpr, HAS_Z: tl.constexpr):
    """Step t's raw inputs in their own dtype: u, delta (before the bias), B_t, C_t (B_t when HAS_C
    is off) and z (u when HAS_Z is off), zeros past L. The forward step loops load step t + 2
    while they compute step t and convert the values (`_f32`) one iteration later: a conversion in
    the loading iteration is a use of the load, which waits for it and so put a memory round trip
    into every step (docs/kernel_tuning_notes.md #19). A loop that needs neither C nor z loads
    neither."""
    m = mask_d & (t < L)
    mn = mask_n & (t < L)
    u = tl.load(u_base + t * s_u_l, mask=m, other=0.0)
    dt = tl.load(dt_base + t * s_dt_l, mask=m, other=0.0)
    Bt = tl.load(B_base + t * s_B_l, mask=mn, other=0.0)
    if HAS_C:
        Ct = tl.load(C_base + t * s_C_l, mask=mn, other=0.0)
    else:
        Ct = Bt
    if HAS_Z:
        z = tl.load(z_base + t * s_z_l, mask=m, other=0.0)
    else:
        z = u
    return u, dt, Bt, Ct, z


@triton.jit
def _f32(x):
    """A loaded value as float32, converted an iteration after its load (see _step_loads)."""
    return x.to(tl.float32)


@triton.jit
def _step_inputs(u_base, dt_base, B_base, C_base, z_base, t, mask_d, mask_n, s_u_l, s_dt_l, s_B_l,
                 s_C_l, s_z_l, L, HAS_C: tl.constexpr, HAS_Z: tl.constexpr):
    """_step_loads as float32 at once: for the segment-adjoint pass, where ptxas already places
    the conversions well after the loads (loading two steps ahead there made its code worse,
    docs/kernel_tuning_notes.md #20, #22)."""
    u, dt, Bt, Ct, z = _step_loads(u_base, dt_base, B_base, C_base, z_base, t, mask_d, mask_n,
                                   s_u_l, s_dt_l, s_B_l, s_C_l, s_z_l, L, HAS_C, HAS_Z)
    return _f32(u), _f32(dt), _f32(Bt), _f32(Ct), _f32(z)


@triton.jit
def _fwd_pipeline_start(u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, k, mask_d, mask_n, s_u, s_dt, s_B, s_C,
                        s_z, bound, bias, seq_base, t, A2, s_seq_l, L, DELTA_SOFTPLUS: tl.constexpr,
                        HAS_SEQ_IDX: tl.constexpr, HAS_C: tl.constexpr, HAS_Z: tl.constexpr):
    """Fill the forward step pipeline at step t (index k of the given pointers, below `bound`):
    step t's inputs with its Δ and decay, and step t + 1's raw inputs. The forward loops then
    compute step t + 1's decay (independent of the state, so the two chains interleave) and load
    step t + 2's inputs while step t runs (_fwd_pipeline_next). Step t's inputs come back as
    float32, step t + 1's raw: the loop converts them when it moves them down the pipeline."""
    u1, raw1, B1, C1, z1 = _step_loads(u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, k, mask_d, mask_n, s_u,
                                       s_dt, s_B, s_C, s_z, bound, HAS_C, HAS_Z)
    dt1, a1, u2, raw2, B2, C2, z2 = _fwd_pipeline_next(
        raw1, u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, k + 1, t - 1, mask_d, mask_n, s_u, s_dt, s_B, s_C,
        s_z, bound, bias, seq_base, A2, s_seq_l, L, DELTA_SOFTPLUS, HAS_SEQ_IDX, HAS_C, HAS_Z)
    return _f32(u1), dt1, a1, _f32(B1), _f32(C1), _f32(z1), u2, raw2, B2, C2, z2


@triton.jit
def _fwd_pipeline_first(slots, u_base, dt_base, B_base, C_base, z_base, t0, mask_d, mask_n, s_u_l,
                        s_dt_l, s_B_l, s_C_l, s_z_l, L, bias, seq_base, A2, s_seq_l,
                        DELTA_SOFTPLUS: tl.constexpr, HAS_SEQ_IDX: tl.constexpr,
                        HAS_C: tl.constexpr, HAS_Z: tl.constexpr, STAGED: tl.constexpr):
    """The pipeline before a kernel's first chunk (_fwd_pipeline_start at step t0, global memory).
    Staged, every chunk restarts it from its stage; this only gives the loop's values the stage's
    dtype (float32 zeros: bound 0), which the loop-carried raw inputs must keep."""
    if STAGED:
        su, sdt, sz, _sdo, sB, sC = slots
        u1, dt1, a1, B1, C1, z1, u2, raw2, B2, C2, z2 = _fwd_pipeline_start(
            su, sdt, sB, sC, sz, 0, mask_d, mask_n, 1, 1, 1, 1, 1, 0, bias, seq_base, t0, A2,
            s_seq_l, L, DELTA_SOFTPLUS, HAS_SEQ_IDX, HAS_C, HAS_Z)
    else:
        u1, dt1, a1, B1, C1, z1, u2, raw2, B2, C2, z2 = _fwd_pipeline_start(
            u_base, dt_base, B_base, C_base, z_base, t0, mask_d, mask_n, s_u_l, s_dt_l, s_B_l,
            s_C_l, s_z_l, L, bias, seq_base, t0, A2, s_seq_l, L, DELTA_SOFTPLUS, HAS_SEQ_IDX, HAS_C,
            HAS_Z)
    return u1, dt1, a1, B1, C1, z1, u2, raw2, B2, C2, z2


@triton.jit
def _fwd_pipeline_next(raw, u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, k, t, mask_d, mask_n, s_u, s_dt,
                       s_B, s_C, s_z, bound, bias, seq_base, A2, s_seq_l, L,
                       DELTA_SOFTPLUS: tl.constexpr, HAS_SEQ_IDX: tl.constexpr,
                       HAS_C: tl.constexpr, HAS_Z: tl.constexpr):
    """One move of the forward step pipeline while step t runs: step t + 1's Δ and decay from its
    raw delta (loaded a step earlier), and the raw inputs at index k (step t + 2)."""
    dt, a = _decay_from(_f32(raw) + bias, seq_base, t + 1, mask_d & (t + 1 < L), A2, s_seq_l, L,
                        DELTA_SOFTPLUS, HAS_SEQ_IDX)
    u, raw, Bt, Ct, z = _step_loads(u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, k, mask_d, mask_n, s_u,
                                    s_dt, s_B, s_C, s_z, bound, HAS_C, HAS_Z)
    return dt, a, u, raw, Bt, Ct, z


@triton.jit
def _rerun_step(h, u1, dt1, a1, B1, u2, raw2, B2, ru, rdt, rB, k, t, mask_d, mask_n, ku, kdt, kB, kb,
                bias, seq_base, A2, s_seq_l, L, DELTA_SOFTPLUS: tl.constexpr,
                HAS_SEQ_IDX: tl.constexpr):
    """Step t of a pipelined loop that only carries the state (the segment-end pass, the
    backward's chunk reruns): h_t from step t's values (u1, dt1, a1, B1), then the pipeline moved
    on a step (_fwd_pipeline_next, step t + 2's inputs loaded at index k). Returns h_t, step t's Δ
    and decay, and the moved pipeline (u1, dt1, a1, B1, u2, raw2, B2)."""
    u, dt, a, Bt = u1, dt1, a1, B1
    u1, B1 = _f32(u2), _f32(B2)  # loaded an iteration ago
    dt1, a1, u2, raw2, B2, _C, _z = _fwd_pipeline_next(
        raw2, ru, rdt, rB, rB, ru, k, t, mask_d, mask_n, ku, kdt, kB, kB, ku, kb, bias, seq_base, A2,
        s_seq_l, L, DELTA_SOFTPLUS, HAS_SEQ_IDX, False, False)
    h = a * h + Bt[:, None] * (dt * u)[None, :]
    return h, dt, a, u1, dt1, a1, B1, u2, raw2, B2


@triton.jit
def _rerun_step3(h, u1, dt1, a1, B1, u2, raw2, B2, u3, raw3, B3, ru, rdt, rB, k, t, mask_d, mask_n,
                 ku, kdt, kB, kb, bias, seq_base, A2, s_seq_l, L, DELTA_SOFTPLUS: tl.constexpr,
                 HAS_SEQ_IDX: tl.constexpr):
    """_rerun_step with the loads a step further ahead: step t + 3's raw inputs load at index k
    while step t runs, so that a load's first use (its conversion, as step t + 1's) comes two
    iterations after it rather than one: _rerun_step's pipeline with (u3, raw3, B3), loaded an
    iteration ago, held back a step."""
    h, dt, a, u1, dt1, a1, B1, u4, raw4, B4 = _rerun_step(
        h, u1, dt1, a1, B1, u2, raw2, B2, ru, rdt, rB, k, t, mask_d, mask_n, ku, kdt, kB, kb, bias,
        seq_base, A2, s_seq_l, L, DELTA_SOFTPLUS, HAS_SEQ_IDX)
    return h, dt, a, u1, dt1, a1, B1, u3, raw3, B3, u4, raw4, B4


@triton.jit
def _gate_grad(dout, y, z):
    """The silu gate's backward: (d y_pre-gate, d z) for y_out = y silu(z). y, a sum over the
    state tile, comes last in dz, so that the per-channel factor is formed in the layout of dout
    and z and only y moves: with y first the compiler took sigmoid(z) in both layouts
    (docs/kernel_tuning_notes.md #22)."""
    sig = tl.sigmoid(z)
    return dout * z * sig, y * (dout * sig * (1.0 + z * (1.0 - sig)))


@triton.jit
def _combine(a1, b1, a2, b2):
    """Compose two steps h -> a h + b: first (a1, b1), then (a2, b2)."""
    return a1 * a2, a2 * b1 + b2


__all__ = ["LOG2E", "FTZ_EXP2", "PREFETCH", "STAGE_SLOTS_D", "STAGE_SLOTS_N"]
