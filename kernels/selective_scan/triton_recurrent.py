"""The "recurrent" Triton kernels: one time step per loop iteration, the state in registers.

A program owns (channel block, batch row, segment). Forward: start from the segment's entry state
(H, from triton_segments.py, or the initial state when there is one segment), run
h = a h + (Δ u) B and y = (C h + D u) silu(z) step by step, save the state entering each chunk for
the backward. Backward: for each chunk of the segment, last first, rerun the chunk forward from its
saved state into a per-program scratch (CHUNK, BLOCK_N, BLOCK_D), then walk it backwards with the
adjoint g_t = a_{t+1} g_{t+1} + C_t dy_t in registers, starting from the segment's exit adjoint.
Every gradient is formed from (h_t, g_t), using a_t h_{t-1} = h_t - (Δ u)_t B_t. With SUB < CHUNK
the chunk is walked in sub-chunks of SUB steps: a first rerun keeps only the state entering each
sub-chunk, then each sub-chunk (last first) is rerun into a (SUB, BLOCK_N, BLOCK_D) scratch and
walked back. One more rerun buys a scratch CHUNK / SUB times smaller, which stays in the caches
(docs/kernel_tuning_notes.md #16).

STAGED (time-contiguous inputs, see plan()): each chunk's inputs are first copied into the
program's stage (triton_steps._chunk_inputs) and the steps read them from there; otherwise the
steps read global memory directly, which is the faster way for channels-last inputs.
"""

import triton
import triton.language as tl

from .triton_steps import (LN2, _channel_params, _channel_sums, _chunk_inputs, _decay, _delta,
                           _exit_row, _f32, _fwd_pipeline_first, _fwd_pipeline_next,
                           _fwd_pipeline_start, _gate_grad, _program, _rerun_step, _rerun_step3,
                           _same_sequence, _segment_chunks, _stage_slots, _state_offsets,
                           _step_loads, _store_channel_partials)

# The backward's chunk rerun loads step t + 3 while step t runs (_rerun_step3) and is unrolled by
# RERUN_UNROLL, so that the loads of consecutive steps sit on different scoreboards and a load's
# first use comes two iterations after it (docs/kernel_tuning_notes.md #28: 1-2 % off the backward
# kernel on an H100). The interpreter ignores the unroll.
RERUN_UNROLL = tl.constexpr(2)


@triton.jit
def _fwd_recurrent_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, init_ptr, seq_ptr,
    y_ptr, ypre_ptr, states_ptr, final_ptr, stage_ptr,
    dim, L, N: tl.constexpr, dim_per_group, n_chunks, chunks_per_seg,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l,
    s_seq_b, s_seq_l,
    s_y_b, s_y_d, s_y_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ_IDX: tl.constexpr,
    WRITE_STATES: tl.constexpr, WRITE_YPRE: tl.constexpr, STAGED: tl.constexpr,
    BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, STAGES: tl.constexpr,
):
    """init (batch, dim, n_seg, N): each segment's entry state. Writes y, the state entering each
    chunk (batch, dim, n_chunks, N) and, from the last segment, the final state (batch, dim, N);
    WRITE_YPRE: also y before the gate, C h + D u, laid out as y (for the chunked backward)."""
    pid_d, b, s, d, n, mask_d, mask_n, mask_nd, g = _program(dim, BLOCK_D, BLOCK_N, N, dim_per_group,
                                                             True)  # one channel a lane: see _program
    n_seg = tl.num_programs(2)
    _, A2, Dv, bias = _channel_params(A_ptr, D_ptr, delta_bias_ptr, d, n, dim, N, mask_d, mask_nd, HAS_D,
                                      HAS_DELTA_BIAS)
    if HAS_INIT:
        h = tl.load(init_ptr + _state_offsets(d, n, dim, N, b * n_seg + s), mask=mask_nd,
                    other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    u_base = u_ptr + b * s_u_b + d * s_u_d
    dt_base = delta_ptr + b * s_dt_b + d * s_dt_d
    z_base = z_ptr + b * s_z_b + d * s_z_d
    B_base = B_ptr + b * s_B_b + g * s_B_g + n * s_B_n
    C_base = C_ptr + b * s_C_b + g * s_C_g + n * s_C_n
    seq_base = seq_ptr + b * s_seq_b
    y_base = y_ptr + b * s_y_b + d * s_y_d
    ypre_base = ypre_ptr + b * s_y_b + d * s_y_d
    slots = _stage_slots(stage_ptr, pid_d, b, s, BLOCK_D, BLOCK_N, CHUNK)
    c0, c1, t0, t1 = _segment_chunks(s, chunks_per_seg, n_chunks, CHUNK, L)
    # software-pipelined steps: while step t computes, step t + 1's decay is computed (it does not
    # depend on h, so the two chains interleave) and step t + 2's inputs load; staged, every chunk
    # restarts the pipeline from its stage
    u1, dt1, a1, B1, C1, z1, u2, raw2, B2, C2, z2 = _fwd_pipeline_first(
        slots, u_base, dt_base, B_base, C_base, z_base, t0, mask_d, mask_n, s_u_l, s_dt_l, s_B_l,
        s_C_l, s_z_l, L, bias, seq_base, A2, s_seq_l, DELTA_SOFTPLUS, HAS_SEQ_IDX, True, HAS_Z,
        STAGED)
    for c in range(c0, c1):
        if WRITE_STATES:
            tl.store(states_ptr + _state_offsets(d, n, dim, N, b * n_chunks + c), h, mask=mask_nd)
        tc = c * CHUNK
        rows = tl.minimum(L - tc, CHUNK)
        ru, ku, rdt, kdt, rz, kz, _rdo, _kdo, rB, kB, rC, kC, k0, kb = _chunk_inputs(
            slots, u_base, dt_base, z_base, u_base, B_base, C_base, s_u_l, s_dt_l, s_z_l, s_u_l,
            s_B_l, s_C_l, tc, rows, L, mask_d, mask_n, STAGED, CHUNK, True, HAS_Z, False, True, True)
        if STAGED:
            u1, dt1, a1, B1, C1, z1, u2, raw2, B2, C2, z2 = _fwd_pipeline_start(
                ru, rdt, rB, rC, rz, 0, mask_d, mask_n, ku, kdt, kB, kC, kz, rows, bias, seq_base, tc,
                A2, s_seq_l, L, DELTA_SOFTPLUS, HAS_SEQ_IDX, True, HAS_Z)
        for i in tl.range(0, CHUNK, num_stages=STAGES):
            t = tc + i
            u, dt, a, Bt, Ct, z = u1, dt1, a1, B1, C1, z1
            u1, B1, C1, z1 = _f32(u2), _f32(B2), _f32(C2), _f32(z2)  # loaded an iteration ago
            dt1, a1, u2, raw2, B2, C2, z2 = _fwd_pipeline_next(
                raw2, ru, rdt, rB, rC, rz, k0 + i + 2, t, mask_d, mask_n, ku, kdt, kB, kC, kz, kb,
                bias, seq_base, A2, s_seq_l, L, DELTA_SOFTPLUS, HAS_SEQ_IDX, True, HAS_Z)
            h = a * h + Bt[:, None] * (dt * u)[None, :]
            y = tl.sum(h * Ct[:, None], axis=0) + u * Dv
            if WRITE_YPRE:
                tl.store(ypre_base + t * s_y_l, y, mask=mask_d & (t < L))
            if HAS_Z:
                y *= z * tl.sigmoid(z)
            tl.store(y_base + t * s_y_l, y, mask=mask_d & (t < L))
    tl.store(final_ptr + _state_offsets(d, n, dim, N, b), h, mask=mask_nd & (s == n_seg - 1))


@triton.jit
def _store_bc(ptr, x, mask, DETERMINISTIC: tl.constexpr):
    """A step's dB or dC (BLOCK_N,): stored into this channel block's partials (DETERMINISTIC) or
    added to the group's sums by atomics."""
    if DETERMINISTIC:
        tl.store(ptr, x, mask=mask)
    else:
        tl.atomic_add(ptr, x, mask=mask)


@triton.jit
def _store_state_sums(ptr, s_n, x, n, mask_n, live, DETERMINISTIC: tl.constexpr,
                      FOLDED: tl.constexpr):
    """A step's dB or dC: the sums over channels of x (BLOCK_N, BLOCK_D), state n's at ptr + n s_n
    (_store_bc), where live. FOLDED (x of (16, 32); fewest shuffles on the one-warp 4 x 8 lane
    tile, Plan.folded_sums): by _channel_sums' folded butterfly; else tl.sum."""
    if FOLDED:
        v, nn, first = _channel_sums(x)
        _store_bc(ptr + nn * s_n, v, first & live, DETERMINISTIC)
    else:
        _store_bc(ptr + n * s_n, tl.sum(x, axis=1), mask_n & live, DETERMINISTIC)


@triton.jit
def _walk_loads(ru, rdt, rB, rC, rz, rdo, scratch, k0, j, mask_d, mask_n, ku, kdt, kB, kC, kz, kdo,
                kb, HAS_Z: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """The raw inputs of the walk back's step j of a sub-chunk (index k0 + j; j below 0 is clamped
    to 0, loaded and never used): u, delta, B, C, z (_step_loads), dout and the state h_j from the
    scratch, as _walk_prep takes them."""
    j = tl.maximum(j, 0)
    u, dt, Bt, Ct, z = _step_loads(ru, rdt, rB, rC, rz, k0 + j, mask_d, mask_n, ku, kdt, kB, kC, kz,
                                   kb, True, HAS_Z)
    dout = tl.load(rdo + (k0 + j) * kdo, mask=mask_d & (k0 + j < kb), other=0.0)
    return u, dt, Bt, Ct, z, dout, tl.load(scratch + j * BLOCK_D * BLOCK_N)


@triton.jit
def _walk_prep(u, raw, Bt, Ct, z, dout, h, t, live, mask_d, n, mask_n, bias, Dv, dD_acc, dz_base,
               s_io_l, dC_base, s_dB_l, s_dB_n, HAS_Z: tl.constexpr, HAS_D: tl.constexpr,
               DELTA_SOFTPLUS: tl.constexpr, DETERMINISTIC: tl.constexpr, FOLDED: tl.constexpr):
    """The part of the walk back's step t that does not depend on the adjoint, from the step's raw
    inputs and its state h_t (_walk_loads; live: whether the step is taken, i.e. inside the
    sequence and the sub-chunk): stores dz and dC, adds to dD, and returns what the adjoint part
    needs: u, B, C (float32), dy, x = Δ u, Δ, the softplus derivative (1 without softplus) and
    dy D (0 without D)."""
    m = mask_d & live
    u, Bt, Ct, dout = _f32(u), _f32(Bt), _f32(Ct), _f32(dout)
    raw = _f32(raw) + bias
    dt = _delta(raw, m, DELTA_SOFTPLUS)
    if HAS_Z:
        dy, dz = _gate_grad(dout, tl.sum(h * Ct[:, None], axis=0) + u * Dv, _f32(z))
        tl.store(dz_base + t * s_io_l, dz, mask=m)
    else:
        dy = dout
    dy = tl.where(m, dy, 0.0)
    if DELTA_SOFTPLUS:
        sg = tl.sigmoid(raw)
    else:
        sg = tl.full(raw.shape, 1.0, tl.float32)
    if HAS_D:
        duD = dy * Dv
        dD_acc += dy * u
    else:
        duD = tl.zeros(raw.shape, dtype=tl.float32)
    _store_state_sums(dC_base + t * s_dB_l, s_dB_n, h * dy[None, :], n, mask_n, live,
                      DETERMINISTIC, FOLDED)
    return u, Bt, Ct, dy, dt * u, dt, sg, duD, dD_acc


@triton.jit
def _bwd_recurrent_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, seq_ptr,
    states_ptr, dout_ptr, dexit_ptr, scratch_ptr, stage_ptr,
    du_ptr, ddelta_ptr, dz_ptr, part_ptr, dBC_ptr, dinit_ptr,
    dim, L, N: tl.constexpr, dim_per_group, n_chunks, chunks_per_seg, s_part, exit_rows, exit_split,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l,
    s_seq_b, s_seq_l,
    s_do_b, s_do_d, s_do_l,
    s_io_b, s_io_d, s_io_l,
    s_dBC, s_dB_b, s_dB_blk, s_dB_n, s_dB_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ_IDX: tl.constexpr,
    HAS_DEXIT: tl.constexpr, DETERMINISTIC: tl.constexpr, STAGED: tl.constexpr,
    BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, STAGES: tl.constexpr,
    SUB: tl.constexpr, FOLDED_SUMS: tl.constexpr, WALK_UNROLL: tl.constexpr,
):
    """dexit (batch, exit_rows, N, dim): the adjoint arriving at each segment's last step from its
    right (the final state's gradient for the last segment), segment s's at row _exit_row. dA, dD,
    dbias are written per (batch row, segment) for a fixed-order sum, into one row of s_part
    elements each at part_ptr: dA as (N, dim), then dD (dim,), then dbias (dim,); dB, dC per
    channel block (DETERMINISTIC) or by atomics, both into dBC (dB, then dC, s_dBC apart)."""
    pid_d, b, s, d, n, mask_d, mask_n, mask_nd, g_idx = _program(dim, BLOCK_D, BLOCK_N, N,
                                                                 dim_per_group, STAGED)
    n_seg = tl.num_programs(2)
    _, A2, Dv, bias = _channel_params(A_ptr, D_ptr, delta_bias_ptr, d, n, dim, N, mask_d, mask_nd, HAS_D,
                                      HAS_DELTA_BIAS)
    part = (b * n_seg + s) * s_part + d  # this program's dD, dbias partials (row of s_part)
    if HAS_DEXIT:
        g = tl.load(dexit_ptr + _state_offsets(d, n, dim, N, _exit_row(b, s, exit_rows, exit_split)),
                    mask=mask_nd, other=0.0).to(tl.float32)
    else:
        g = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    # step t + 1's Δ and sequence continuation, for a_{t+1} (a = 1 after the segment's end)
    dt_next = tl.zeros([BLOCK_D], dtype=tl.float32)
    keep_next = 1.0
    dA_acc = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)

    u_base = u_ptr + b * s_u_b + d * s_u_d
    dt_base = delta_ptr + b * s_dt_b + d * s_dt_d
    z_base = z_ptr + b * s_z_b + d * s_z_d
    do_base = dout_ptr + b * s_do_b + d * s_do_d
    B_base = B_ptr + b * s_B_b + g_idx * s_B_g + n * s_B_n
    C_base = C_ptr + b * s_C_b + g_idx * s_C_g + n * s_C_n
    seq_base = seq_ptr + b * s_seq_b
    io_base = b * s_io_b + d * s_io_d  # du, ddelta, dz share one layout
    n_blocks = tl.num_programs(0)
    # the scratch: per program, SUB + CHUNK / SUB states (a sub-chunk's steps, then the states
    # entering each sub-chunk), each (BN, BD) in the layout of the state tiles (_program:
    # ONE_CHANNEL_PER_LANE; triton_scan._scratch_floats); these are the offsets of its first state
    scratch = (((b * n_seg + s) * n_blocks + pid_d) * (SUB + CHUNK // SUB) * BLOCK_D * BLOCK_N
               + n[:, None] * BLOCK_D + tl.arange(0, BLOCK_D)[None, :])
    if STAGED:
        scratch = tl.multiple_of(scratch, [1, 1])
    scratch = scratch_ptr + scratch
    if DETERMINISTIC:
        dB_base = dBC_ptr + b * s_dB_b + pid_d * s_dB_blk
    else:
        dB_base = dBC_ptr + b * s_dB_b + g_idx * s_dB_blk
    dC_base = dB_base + s_dBC  # dBC: dB's slices, then dC's, s_dBC apart
    slots = _stage_slots(stage_ptr, pid_d, b, s, BLOCK_D, BLOCK_N, CHUNK)
    c0, c1, t0, t1 = _segment_chunks(s, chunks_per_seg, n_chunks, CHUNK, L)
    n_sub = CHUNK // SUB
    entries = scratch + SUB * BLOCK_D * BLOCK_N  # the state entering each sub-chunk (SUB < CHUNK)
    for i in range(0, c1 - c0):
        c = c1 - 1 - i
        tc = c * CHUNK
        rows = tl.minimum(L - tc, CHUNK)
        h = tl.load(states_ptr + _state_offsets(d, n, dim, N, b * n_chunks + c), mask=mask_nd,
                    other=0.0)
        # the chunk's inputs (staged once for every loop: see the forward)
        ru, ku, rdt, kdt, rz, kz, rdo, kdo, rB, kB, rC, kC, k0, kb = _chunk_inputs(
            slots, u_base, dt_base, z_base, do_base, B_base, C_base, s_u_l, s_dt_l, s_z_l, s_do_l,
            s_B_l, s_C_l, tc, rows, L, mask_d, mask_n, STAGED, CHUNK, True, HAS_Z, True, True, True)
        if SUB < CHUNK:  # rerun the chunk once, keeping only the state entering each sub-chunk
            u1, dt1, a1, B1, _C1, _z1, u2, raw2, B2, _C2, _z2 = _fwd_pipeline_start(
                ru, rdt, rB, rB, ru, k0, mask_d, mask_n, ku, kdt, kB, kB, ku, kb, bias, seq_base, tc,
                A2, s_seq_l, L, DELTA_SOFTPLUS, HAS_SEQ_IDX, False, False)
            for q in range(0, n_sub):
                tl.store(entries + q * BLOCK_D * BLOCK_N, h)
                for j in tl.range(0, SUB, num_stages=STAGES):
                    h, _dt, _a, u1, dt1, a1, B1, u2, raw2, B2 = _rerun_step(
                        h, u1, dt1, a1, B1, u2, raw2, B2, ru, rdt, rB, k0 + q * SUB + j + 2,
                        tc + q * SUB + j, mask_d, mask_n, ku, kdt, kB, kb, bias, seq_base, A2,
                        s_seq_l, L, DELTA_SOFTPLUS, HAS_SEQ_IDX)
            tl.debug_barrier()
        for q in range(0, n_sub):  # sub-chunks, last first
            js = (n_sub - 1 - q) * SUB  # the sub-chunk's first step within the chunk
            if SUB < CHUNK:
                h = tl.load(entries + (n_sub - 1 - q) * BLOCK_D * BLOCK_N)
            # the sub-chunk rerun into the scratch, pipelined as the forward but a step deeper
            # (step t + 1's decay and step t + 3's loads while step t runs); the walk back loads
            # step t - 1's inputs while it computes step t
            u1, dt1, a1, B1, _C1, _z1, u2, raw2, B2, _C2, _z2 = _fwd_pipeline_start(
                ru, rdt, rB, rB, ru, k0 + js, mask_d, mask_n, ku, kdt, kB, kB, ku, kb, bias, seq_base,
                tc + js, A2, s_seq_l, L, DELTA_SOFTPLUS, HAS_SEQ_IDX, False, False)
            u3, raw3, B3, _C3, _z3 = _step_loads(ru, rdt, rB, rB, ru, k0 + js + 2, mask_d, mask_n,
                                                 ku, kdt, kB, kB, ku, kb, False, False)
            for j in tl.range(0, SUB, num_stages=STAGES, loop_unroll_factor=RERUN_UNROLL):
                h, _dt, _a, u1, dt1, a1, B1, u2, raw2, B2, u3, raw3, B3 = _rerun_step3(
                    h, u1, dt1, a1, B1, u2, raw2, B2, u3, raw3, B3, ru, rdt, rB, k0 + js + j + 3,
                    tc + js + j, mask_d, mask_n, ku, kdt, kB, kb, bias, seq_base, A2, s_seq_l, L,
                    DELTA_SOFTPLUS, HAS_SEQ_IDX)
                tl.store(scratch + j * BLOCK_D * BLOCK_N, h)
            tl.debug_barrier()
            # the walk back, software-pipelined: iteration t runs step t's part that depends on
            # the adjoint g (g, dx, dΔ, du, dA, dB) from values prepared an iteration earlier,
            # and prepares step t - 1 (_walk_prep: Δ, the gate, dy, dz, dC, dD), which does not
            # depend on g, so that the two chains interleave. Step t - 1's raw inputs were loaded
            # an iteration earlier, step t - 2's load now (indices before the sub-chunk clamped
            # to its first step; what they prepare is masked and never used)
            t = tc + js + SUB - 1
            u_p, B_p, C_p, dy_p, x_p, dt_p, sg_p, duD_p, dD_acc = _walk_prep(
                *_walk_loads(ru, rdt, rB, rC, rz, rdo, scratch, k0 + js, SUB - 1, mask_d, mask_n,
                             ku, kdt, kB, kC, kz, kdo, kb, HAS_Z, BLOCK_D, BLOCK_N),
                t, t < L, mask_d, n, mask_n, bias, Dv, dD_acc, dz_ptr + io_base, s_io_l,
                dC_base, s_dB_l, s_dB_n, HAS_Z, HAS_D, DELTA_SOFTPLUS, DETERMINISTIC, FOLDED_SUMS)
            raw = _walk_loads(ru, rdt, rB, rC, rz, rdo, scratch, k0 + js, SUB - 2, mask_d, mask_n,
                              ku, kdt, kB, kC, kz, kdo, kb, HAS_Z, BLOCK_D, BLOCK_N)
            for j in tl.range(0, SUB, num_stages=STAGES, loop_unroll_factor=WALK_UNROLL):
                jj = SUB - 1 - j
                t = tc + js + jj
                m = mask_d & (t < L)
                # step t's adjoint part
                h = tl.load(scratch + jj * BLOCK_D * BLOCK_N)  # h_t, read again (cached)
                g = _decay(A2, dt_next, keep_next, HAS_SEQ_IDX) * g + C_p[:, None] * dy_p[None, :]
                dx = tl.sum(g * B_p[:, None], axis=0)
                gh = g * (h - B_p[:, None] * x_p[None, :])  # g_t a_t h_{t-1}
                ddt = (dx * u_p + tl.sum(gh * A2, axis=0) * LN2) * sg_p
                dA_acc += gh * dt_p[None, :]
                tl.store(du_ptr + io_base + t * s_io_l, dx * dt_p + duD_p, mask=m)
                ddt = tl.where(m, ddt, 0.0)
                tl.store(ddelta_ptr + io_base + t * s_io_l, ddt, mask=m)
                dbias_acc += ddt
                _store_state_sums(dB_base + t * s_dB_l, s_dB_n, g * x_p[None, :], n, mask_n, t < L,
                                  DETERMINISTIC, FOLDED_SUMS)
                dt_next = dt_p
                if HAS_SEQ_IDX:
                    keep_next = _same_sequence(seq_base, t, L, s_seq_l).to(tl.float32)
                # step t - 1 prepared from its inputs loaded an iteration ago; step t - 2's load
                prev = raw
                raw = _walk_loads(ru, rdt, rB, rC, rz, rdo, scratch, k0 + js, jj - 2, mask_d,
                                  mask_n, ku, kdt, kB, kC, kz, kdo, kb, HAS_Z, BLOCK_D, BLOCK_N)
                u_p, B_p, C_p, dy_p, x_p, dt_p, sg_p, duD_p, dD_acc = _walk_prep(
                    *prev, t - 1, (t - 1 < L) & (jj >= 1), mask_d, n, mask_n, bias, Dv, dD_acc,
                    dz_ptr + io_base, s_io_l, dC_base, s_dB_l, s_dB_n, HAS_Z, HAS_D,
                    DELTA_SOFTPLUS, DETERMINISTIC, FOLDED_SUMS)
            tl.debug_barrier()
    tl.store(part_ptr + (b * n_seg + s) * s_part + _state_offsets(d, n, dim, N, 0), dA_acc, mask=mask_nd)
    if HAS_INIT:  # a_0 g_0, from the first segment
        tl.store(dinit_ptr + _state_offsets(d, n, dim, N, b),
                 _decay(A2, dt_next, keep_next, HAS_SEQ_IDX) * g,
                 mask=mask_nd & (s == 0))
    _store_channel_partials(part_ptr, part, N, dim, dD_acc, dbias_acc, mask_d, HAS_D,
                            HAS_DELTA_BIAS)
