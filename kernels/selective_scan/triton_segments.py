"""Parallelism along L: the passes that let every segment of a sequence run at once.

The recurrence h_t = a_t h_{t-1} + b_t is linear, so a segment [t0, t1) maps its entry state H to
P H + E, with P = a_{t0} ... a_{t1-1} (exp(A ΣΔ), zero across a seq_idx reset) and E the segment's
end state from a zero start. Forward:

1. `_segment_end_kernel`: every segment but the last, from zero: (P_s, E_s).    All at once.
2. `_segment_carry_kernel`: H_0 = initial state, H_{s+1} = P_s H_s + E_s.        n_seg steps.
3. the output kernels (triton_recurrent.py / triton_tiled.py) rerun every segment from H_s.

The adjoint g_t = a_{t+1} g_{t+1} + C_t dy_t is the same recurrence run backwards, so backward
mirrors it: `_segment_start_adjoint_kernel` runs every segment but the first backwards from zero and
returns (P_s, mu_s = a_{t0} g_{t0}); the carry kernel in reverse gives each segment's exit adjoint
G_{s-1} = mu_s + P_s G_s from G_{n_seg-1} = the final state's gradient; the gradient kernels then
rerun every segment from (its saved chunk states, G_s). Nothing of size (batch, dim, L, N) is
written: P, E, H, mu and G are (batch, dim, n_seg, N).
"""

import triton
import triton.language as tl

from .triton_steps import (_channel_params, _chunk_inputs, _combine, _decay_from, _exp2,
                           _fwd_pipeline_first, _fwd_pipeline_start, _prefetch_chunk, _program,
                           _rerun_step, _segment_chunks, _stage_slots, _state_offsets, _step_inputs)


@triton.jit
def _decay_product_step(p, a, dt_sum, dt, HAS_SEQ_IDX: tl.constexpr):
    """One step of a segment's total decay P = prod_t a_t = exp(A sum_t Δ_t): without seq_idx only
    the (BLOCK_D,) sum of Δ is kept (one add a channel instead of BLOCK_N multiplies a step);
    with it the product itself, which a reset (a = 0) zeroes."""
    if HAS_SEQ_IDX:
        p = p * a
    else:
        dt_sum += dt
    return p, dt_sum


@triton.jit
def _decay_product(p, dt_sum, A2, HAS_SEQ_IDX: tl.constexpr):
    """A segment's total decay from what _decay_product_step kept."""
    if not HAS_SEQ_IDX:
        p = _exp2(A2 * dt_sum[None, :])
    return p


@triton.jit
def _pe_half(boundaries, N, dim):
    """Elements between the two halves of a segment pass's (2, batch, boundaries, N, dim) output
    (program axis 1 is the batch row)."""
    return tl.num_programs(1).to(tl.int64) * boundaries * N * dim


@triton.jit
def _segment_end_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, delta_bias_ptr, seq_ptr, PE_ptr, stage_ptr,
    dim, L, N: tl.constexpr, dim_per_group, n_chunks, chunks_per_seg,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_seq_b, s_seq_l,
    HAS_DELTA_BIAS: tl.constexpr, DELTA_SOFTPLUS: tl.constexpr, HAS_SEQ_IDX: tl.constexpr,
    STAGED: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Program s (of n_seg - 1) scans segment s from a zero state: P_s and E_s into PE, (2, batch,
    n_seg - 1, N, dim): P, then E (one buffer, _pe_half apart)."""
    pid_d, b, s, d, n, mask_d, mask_n, mask_nd, g = _program(dim, BLOCK_D, BLOCK_N, N, dim_per_group,
                                                             True)  # one channel a lane: see _program
    _, A2, _, bias = _channel_params(A_ptr, A_ptr, delta_bias_ptr, d, n, dim, N, mask_d, mask_nd, False,
                                     HAS_DELTA_BIAS)
    u_base = u_ptr + b * s_u_b + d * s_u_d
    dt_base = delta_ptr + b * s_dt_b + d * s_dt_d
    B_base = B_ptr + b * s_B_b + g * s_B_g + n * s_B_n
    seq_base = seq_ptr + b * s_seq_b
    h = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    p = tl.full([BLOCK_N, BLOCK_D], 1.0, dtype=tl.float32)
    dt_sum = bias * 0.0
    slots = _stage_slots(stage_ptr, pid_d, b, s, BLOCK_D, BLOCK_N, CHUNK)
    c0, c1, t0, t1 = _segment_chunks(s, chunks_per_seg, n_chunks, CHUNK, L)
    # software-pipelined as the forward kernel (triton_recurrent.py): step t + 1's decay computes
    # and step t + 2's inputs load while step t runs (neither C nor z is needed)
    u1, dt1, a1, B1, _C1, _z1, u2, raw2, B2, _C2, _z2 = _fwd_pipeline_first(
        slots, u_base, dt_base, B_base, B_base, u_base, t0, mask_d, mask_n, s_u_l, s_dt_l, s_B_l,
        s_B_l, s_u_l, L, bias, seq_base, A2, s_seq_l, DELTA_SOFTPLUS, HAS_SEQ_IDX, False, False,
        STAGED)
    for c in range(c0, c1):
        tc = c * CHUNK
        rows = tl.minimum(L - tc, CHUNK)
        ru, ku, rdt, kdt, _rz, _kz, _rdo, _kdo, rB, kB, _rC, _kC, k0, kb = _chunk_inputs(
            slots, u_base, dt_base, u_base, u_base, B_base, B_base, s_u_l, s_dt_l, s_u_l, s_u_l,
            s_B_l, s_B_l, tc, rows, L, mask_d, mask_n, STAGED, CHUNK, True, False, False, True, False)
        if not STAGED:  # the segment's next chunk into L2 while this one runs
            _prefetch_chunk(ru, ku, rdt, kdt, rB, kB, ru, ku, ru, ku, rB, kB, tc + CHUNK, 0,
                            tl.minimum(L, c1 * CHUNK), False, False, False, CHUNK)
        if STAGED:
            u1, dt1, a1, B1, _C1, _z1, u2, raw2, B2, _C2, _z2 = _fwd_pipeline_start(
                ru, rdt, rB, rB, ru, 0, mask_d, mask_n, ku, kdt, kB, kB, ku, rows, bias, seq_base,
                tc, A2, s_seq_l, L, DELTA_SOFTPLUS, HAS_SEQ_IDX, False, False)
        for i in range(0, CHUNK):
            h, dt, a, u1, dt1, a1, B1, u2, raw2, B2 = _rerun_step(
                h, u1, dt1, a1, B1, u2, raw2, B2, ru, rdt, rB, k0 + i + 2, tc + i, mask_d, mask_n, ku,
                kdt, kB, kb, bias, seq_base, A2, s_seq_l, L, DELTA_SOFTPLUS, HAS_SEQ_IDX)
            p, dt_sum = _decay_product_step(p, a, dt_sum, dt, HAS_SEQ_IDX)
    out = _state_offsets(d, n, dim, N, b * tl.num_programs(2) + s)
    tl.store(PE_ptr + out, _decay_product(p, dt_sum, A2, HAS_SEQ_IDX), mask=mask_nd)
    tl.store(PE_ptr + _pe_half(tl.num_programs(2), N, dim) + out, h, mask=mask_nd)


@triton.jit
def _segment_start_adjoint_kernel(
    delta_ptr, A_ptr, C_ptr, z_ptr, delta_bias_ptr, seq_ptr, dout_ptr, PE_ptr, stage_ptr,
    dim, L, N: tl.constexpr, dim_per_group, n_chunks, chunks_per_seg,
    s_dt_b, s_dt_d, s_dt_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l,
    s_seq_b, s_seq_l,
    s_do_b, s_do_d, s_do_l,
    HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr, DELTA_SOFTPLUS: tl.constexpr,
    HAS_SEQ_IDX: tl.constexpr, STAGED: tl.constexpr,
    BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Program k (of n_seg - 1) runs the adjoint of segment s = k + 1 backwards from zero:
    P_s and mu_s = a_{t0} g_{t0}, stored at index k of PE's halves, (2, batch, n_seg - 1, N, dim):
    P, then mu."""
    pid_d, b, k, d, n, mask_d, mask_n, mask_nd, g = _program(dim, BLOCK_D, BLOCK_N, N, dim_per_group,
                                                             STAGED)
    _, A2, _, bias = _channel_params(A_ptr, A_ptr, delta_bias_ptr, d, n, dim, N, mask_d, mask_nd, False,
                                     HAS_DELTA_BIAS)
    dt_base = delta_ptr + b * s_dt_b + d * s_dt_d
    z_base = z_ptr + b * s_z_b + d * s_z_d
    do_base = dout_ptr + b * s_do_b + d * s_do_d
    C_base = C_ptr + b * s_C_b + g * s_C_g + n * s_C_n
    seq_base = seq_ptr + b * s_seq_b
    lam = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    a_next = tl.full([BLOCK_N, BLOCK_D], 1.0, dtype=tl.float32)
    p = tl.full([BLOCK_N, BLOCK_D], 1.0, dtype=tl.float32)
    dt_sum = bias * 0.0
    slots = _stage_slots(stage_ptr, pid_d, b, k, BLOCK_D, BLOCK_N, CHUNK)
    c0, c1, t0, t1 = _segment_chunks(k + 1, chunks_per_seg, n_chunks, CHUNK, L)
    for ci in range(0, c1 - c0):
        tc = (c1 - 1 - ci) * CHUNK
        rows = tl.minimum(L - tc, CHUNK)
        _ru, _ku, rdt, kdt, rz, kz, rdo, kdo, _rB, _kB, rC, kC, k0, kb = _chunk_inputs(
            slots, dt_base, dt_base, z_base, do_base, C_base, C_base, s_dt_l, s_dt_l, s_z_l, s_do_l,
            s_C_l, s_C_l, tc, rows, L, mask_d, mask_n, STAGED, CHUNK, False, HAS_Z, True, False, True)
        if not STAGED:  # the segment's next chunk (the one before: last first) into L2
            _prefetch_chunk(rdo, kdo, rdt, kdt, rC, kC, rz, kz, rdo, kdo, rC, kC, tc - CHUNK,
                            c0 * CHUNK, L, HAS_Z, False, False, CHUNK)
        # step i - 1's inputs load while step i computes (dout stands in for u, C for B)
        dy_n, dt_n, C_n, _C2, z_n = _step_inputs(rdo, rdt, rC, rC, rz, k0 + CHUNK - 1, mask_d, mask_n, kdo,
                                                kdt, kC, kC, kz, kb, False, HAS_Z)
        for j in range(0, CHUNK):
            i = CHUNK - 1 - j
            t = tc + i
            dy, raw, Ct, z = dy_n, dt_n + bias, C_n, z_n
            dy_n, dt_n, C_n, _C2, z_n = _step_inputs(rdo, rdt, rC, rC, rz, k0 + tl.maximum(i - 1, 0),
                                                    mask_d, mask_n, kdo, kdt, kC, kC, kz, kb,
                                                    False, HAS_Z)
            dt, a = _decay_from(raw, seq_base, t, mask_d & (t < L), A2, s_seq_l, L, DELTA_SOFTPLUS,
                                HAS_SEQ_IDX)
            if HAS_Z:
                dy = dy * z * tl.sigmoid(z)
            lam = a_next * lam + Ct[:, None] * dy[None, :]
            p, dt_sum = _decay_product_step(p, a, dt_sum, dt, HAS_SEQ_IDX)
            a_next = a
    out = _state_offsets(d, n, dim, N, b * tl.num_programs(2) + k)
    tl.store(PE_ptr + out, _decay_product(p, dt_sum, A2, HAS_SEQ_IDX), mask=mask_nd)
    tl.store(PE_ptr + _pe_half(tl.num_programs(2), N, dim) + out, a_next * lam, mask=mask_nd)


@triton.jit
def _carry_index(jj, n_seg, REVERSE: tl.constexpr):
    """Index k in P and E of the boundaries jj, counted in the order they are crossed."""
    return n_seg - 2 - jj if REVERSE else jj


@triton.jit
def _carry_block(P_ptr, E_ptr, b, j0, j, nd, mask_nd, N: tl.constexpr, dim, n_seg,
                 REVERSE: tl.constexpr):
    """P and E of the BLOCK_S boundaries j0 + j (in crossing order), (BLOCK_S, BLOCK_N, BLOCK_D);
    past the last boundary P = 1, E = 0 (the state passes unchanged)."""
    jj = j0 + j
    mask = (jj < n_seg - 1)[:, None, None] & mask_nd[None, :, :]
    k = _carry_index(jj, n_seg, REVERSE)
    pe = ((b * (n_seg - 1) + k) * N * dim)[:, None, None] + nd[None, :, :]
    return tl.load(P_ptr + pe, mask=mask, other=1.0), tl.load(E_ptr + pe, mask=mask, other=0.0)


@triton.jit
def _segment_carry_kernel(
    x0_ptr, PE_ptr, out_ptr, dim, N: tl.constexpr, n_seg,
    HAS_X0: tl.constexpr, REVERSE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    """x across segment boundaries: out[0] = x0, out[k+1] = P[k] out[k] + E[k] (REVERSE: from
    out[n_seg-1] = x0 down, out[k] = P[k] out[k+1] + E[k]). x0 (batch, N, dim) or zeros; PE
    (2, batch, n_seg - 1, N, dim): P, then E; out (batch, n_seg, N, dim).

    BLOCK_S boundaries are taken at once: their P and E load together (one round trip to memory
    instead of one per boundary, which made this pass a chain of n_seg dependent loads) and are
    composed by an associative scan, so the sequential part is n_seg / BLOCK_S steps; the next
    block's loads are issued before this block is composed."""
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    d = pid_d.to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    n = tl.arange(0, BLOCK_N).to(tl.int64)
    mask_nd = (n < N)[:, None] & (d < dim)[None, :]
    if HAS_X0:
        x = tl.load(x0_ptr + _state_offsets(d, n, dim, N, b), mask=mask_nd, other=0.0)
        x = x.to(tl.float32)
    else:
        x = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    first = b * n_seg + (n_seg - 1 if REVERSE else 0)
    tl.store(out_ptr + _state_offsets(d, n, dim, N, first), x, mask=mask_nd)
    nd = n[:, None] * dim + d[None, :]  # (BLOCK_N, BLOCK_D) offsets within one state
    j = tl.arange(0, BLOCK_S)
    P_ptr, E_ptr = PE_ptr, PE_ptr + _pe_half(n_seg - 1, N, dim)
    p_next, e_next = _carry_block(P_ptr, E_ptr, b, 0, j, nd, mask_nd, N, dim, n_seg, REVERSE)
    for j0 in range(0, n_seg - 1, BLOCK_S):
        # the next block's P and E load while this block is composed (one round trip in flight)
        p, e, k = p_next, e_next, _carry_index(j0 + j, n_seg, REVERSE)
        p_next, e_next = _carry_block(P_ptr, E_ptr, b, j0 + BLOCK_S, j, nd, mask_nd, N, dim, n_seg,
                                      REVERSE)
        mask = (j0 + j < n_seg - 1)[:, None, None] & mask_nd[None, :, :]
        p, e = tl.associative_scan((p, e), axis=0, combine_fn=_combine)
        xs = p * x[None, :, :] + e
        slot = k if REVERSE else k + 1
        tl.store(out_ptr + ((b * n_seg + slot) * N * dim)[:, None, None] + nd[None, :, :], xs,
                 mask=mask)
        x = tl.sum(tl.where((j == BLOCK_S - 1)[:, None, None], xs, 0.0), axis=0)
