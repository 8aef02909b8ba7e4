"""The "tiled" Triton kernels: each chunk solved at once with `tl.associative_scan`.

Same contract as triton_recurrent.py (a program owns a channel block, a batch row and a segment),
but a chunk's recurrence h_t = a_t h_{t-1} + b_t is solved for all (channel, step, state) at once
over a (BLOCK_D, CHUNK, BLOCK_N) register tile of (a, b) pairs; backward recomputes the chunk the
same way and solves the adjoint with a reverse scan (checked against the float64 reference: Triton
issue #4362 once broke `reverse=True`).
"""

import triton
import triton.language as tl

from .triton_steps import (_channel_params, _combine, _delta, _gate_grad, _program, _same_sequence,
                           _exit_row, _segment_chunks, _state_offsets, _store_channel_partials)


@triton.jit
def _dn(d, n, dim, N, r):
    """(BLOCK_D, BLOCK_N) offsets of state r in a (rows, N, dim) buffer (see _state_offsets)."""
    return tl.trans(_state_offsets(d, n, dim, N, r))


@triton.jit
def _tiled_program(A_ptr, D_ptr, delta_bias_ptr, dim, N, dim_per_group, HAS_D: tl.constexpr,
                   HAS_DELTA_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """_program and _channel_params, with the state tile as (BLOCK_D, BLOCK_N): these kernels'
    tiles are (BLOCK_D, CHUNK, BLOCK_N)."""
    pid_d, b, s, d, n, mask_d, mask_n, mask_nd, g = _program(dim, BLOCK_D, BLOCK_N, N, dim_per_group)
    A, A2, Dv, bias = _channel_params(A_ptr, D_ptr, delta_bias_ptr, d, n, dim, N, mask_d, mask_nd, HAS_D,
                                      HAS_DELTA_BIAS)
    return pid_d, b, s, d, n, mask_d, mask_n, tl.trans(mask_nd), tl.trans(A), tl.trans(A2), Dv, bias, g


@triton.jit
def _tile_decay(dt_base, seq_base, t, mask_d, bias, A2, end, s_dt_l, s_seq_l, L,
                DELTA_SOFTPLUS: tl.constexpr, HAS_SEQ_IDX: tl.constexpr):
    """Steps t (CHUNK,): raw delta + bias and Δ (BLOCK_D, CHUNK), a (BLOCK_D, CHUNK, BLOCK_N);
    steps at or past `end` get Δ = 0 and a = 1 (they leave the state, and the adjoint, unchanged)."""
    valid = t < end
    mask = mask_d[:, None] & valid[None, :]
    raw = tl.load(dt_base + t[None, :] * s_dt_l, mask=mask, other=0.0).to(tl.float32) + bias[:, None]
    dt = _delta(raw, mask, DELTA_SOFTPLUS)
    a = tl.exp2(dt[:, :, None] * A2[:, None, :])
    if HAS_SEQ_IDX:
        keep = _same_sequence(seq_base, t, L, s_seq_l) | (~valid)
        a = a * keep.to(tl.float32)[None, :, None]
    return raw, dt, a


@triton.jit
def _fwd_tiled_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, init_ptr, seq_ptr,
    y_ptr, ypre_ptr, states_ptr, final_ptr,
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
    WRITE_STATES: tl.constexpr, WRITE_YPRE: tl.constexpr,
    BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Same arguments and outputs as triton_recurrent._fwd_recurrent_kernel."""
    pid_d, b, s, d, n, mask_d, mask_n, mask_dn, A, A2, Dv, bias, g = _tiled_program(
        A_ptr, D_ptr, delta_bias_ptr, dim, N, dim_per_group, HAS_D, HAS_DELTA_BIAS, BLOCK_D, BLOCK_N)
    n_seg = tl.num_programs(2)
    tt = tl.arange(0, CHUNK).to(tl.int64)
    if HAS_INIT:
        h = tl.load(init_ptr + _dn(d, n, dim, N, b * n_seg + s), mask=mask_dn,
                    other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    u_base = u_ptr + b * s_u_b + d[:, None] * s_u_d
    dt_base = delta_ptr + b * s_dt_b + d[:, None] * s_dt_d
    B_base = B_ptr + b * s_B_b + g * s_B_g + n[None, :] * s_B_n
    C_base = C_ptr + b * s_C_b + g * s_C_g + n[None, :] * s_C_n
    seq_base = seq_ptr + b * s_seq_b
    y_base = y_ptr + b * s_y_b + d[:, None] * s_y_d
    c0, c1, t0, t1 = _segment_chunks(s, chunks_per_seg, n_chunks, CHUNK, L)
    for c in range(c0, c1):
        t = c * CHUNK + tt
        mask_t = t < L
        mask = mask_d[:, None] & mask_t[None, :]  # (BD, T)
        if WRITE_STATES:
            tl.store(states_ptr + _dn(d, n, dim, N, b * n_chunks + c), h,
                     mask=mask_dn)
        u = tl.load(u_base + t[None, :] * s_u_l, mask=mask, other=0.0).to(tl.float32)
        raw, dt, a = _tile_decay(dt_base, seq_base, t, mask_d, bias, A2, t1, s_dt_l, s_seq_l, L,
                                 DELTA_SOFTPLUS, HAS_SEQ_IDX)
        mask_tn = mask_t[:, None] & mask_n[None, :]
        Bt = tl.load(B_base + t[:, None] * s_B_l, mask=mask_tn, other=0.0).to(tl.float32)  # (T, BN)
        Ct = tl.load(C_base + t[:, None] * s_C_l, mask=mask_tn, other=0.0).to(tl.float32)
        bx = (dt * u)[:, :, None] * Bt[None, :, :]  # (BD, T, BN)
        a_cum, b_cum = tl.associative_scan((a, bx), axis=1, combine_fn=_combine)
        hs = a_cum * h[:, None, :] + b_cum  # (BD, T, BN) state after each step
        y = tl.sum(hs * Ct[None, :, :], axis=2) + u * Dv[:, None]  # (BD, T)
        if WRITE_YPRE:
            tl.store(ypre_ptr + b * s_y_b + d[:, None] * s_y_d + t[None, :] * s_y_l, y, mask=mask)
        if HAS_Z:
            z = tl.load(z_ptr + b * s_z_b + d[:, None] * s_z_d + t[None, :] * s_z_l, mask=mask,
                        other=0.0).to(tl.float32)
            y *= z * tl.sigmoid(z)
        tl.store(y_base + t[None, :] * s_y_l, y, mask=mask)
        # padded steps have a = 1 and b = 0, so the last row of the tile is the state after step L-1
        h = tl.sum(tl.where((tt == CHUNK - 1)[None, :, None], hs, 0.0), axis=1)  # (BD, BN)
    tl.store(final_ptr + _dn(d, n, dim, N, b), h, mask=mask_dn & (s == n_seg - 1))


@triton.jit
def _bwd_tiled_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, seq_ptr,
    states_ptr, dout_ptr, dexit_ptr,
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
    HAS_DEXIT: tl.constexpr, DETERMINISTIC: tl.constexpr,
    BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Same arguments and outputs as triton_recurrent._bwd_recurrent_kernel (no scratch)."""
    pid_d, b, s, d, n, mask_d, mask_n, mask_dn, A, A2, Dv, bias, g = _tiled_program(
        A_ptr, D_ptr, delta_bias_ptr, dim, N, dim_per_group, HAS_D, HAS_DELTA_BIAS, BLOCK_D, BLOCK_N)
    n_seg = tl.num_programs(2)
    tt = tl.arange(0, CHUNK).to(tl.int64)
    part = (b * n_seg + s) * s_part + d
    if HAS_DEXIT:  # the adjoint arriving at the segment's last step, already through a_{t1}
        carry = tl.load(dexit_ptr + _dn(d, n, dim, N, _exit_row(b, s, exit_rows, exit_split)),
                        mask=mask_dn, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dinit = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)

    u_base = u_ptr + b * s_u_b + d[:, None] * s_u_d
    dt_base = delta_ptr + b * s_dt_b + d[:, None] * s_dt_d
    B_base = B_ptr + b * s_B_b + g * s_B_g + n[None, :] * s_B_n
    C_base = C_ptr + b * s_C_b + g * s_C_g + n[None, :] * s_C_n
    do_base = dout_ptr + b * s_do_b + d[:, None] * s_do_d
    seq_base = seq_ptr + b * s_seq_b
    io_base = b * s_io_b + d[:, None] * s_io_d  # du, ddelta, dz share one layout
    if DETERMINISTIC:
        dB_base = dBC_ptr + b * s_dB_b + pid_d * s_dB_blk + n[None, :] * s_dB_n
    else:
        dB_base = dBC_ptr + b * s_dB_b + g * s_dB_blk + n[None, :] * s_dB_n
    dC_base = dB_base + s_dBC
    c0, c1, t0, t1 = _segment_chunks(s, chunks_per_seg, n_chunks, CHUNK, L)
    for i in range(0, c1 - c0):
        c = c1 - 1 - i
        t = c * CHUNK + tt
        mask_t = t < L
        mask = mask_d[:, None] & mask_t[None, :]
        mask_tn = mask_t[:, None] & mask_n[None, :]
        h0 = tl.load(states_ptr + _dn(d, n, dim, N, b * n_chunks + c),
                     mask=mask_dn, other=0.0)
        u = tl.load(u_base + t[None, :] * s_u_l, mask=mask, other=0.0).to(tl.float32)
        raw, dt, a = _tile_decay(dt_base, seq_base, t, mask_d, bias, A2, t1, s_dt_l, s_seq_l, L,
                                 DELTA_SOFTPLUS, HAS_SEQ_IDX)
        # a one step ahead; 1 past the segment's end, whose adjoint `carry` arrives already through it
        _, _, a_next = _tile_decay(dt_base, seq_base, t + 1, mask_d, bias, A2, t1, s_dt_l, s_seq_l, L,
                                   DELTA_SOFTPLUS, HAS_SEQ_IDX)
        Bt = tl.load(B_base + t[:, None] * s_B_l, mask=mask_tn, other=0.0).to(tl.float32)
        Ct = tl.load(C_base + t[:, None] * s_C_l, mask=mask_tn, other=0.0).to(tl.float32)
        dout = tl.load(do_base + t[None, :] * s_do_l, mask=mask, other=0.0).to(tl.float32)
        x = dt * u  # (BD, T)
        bx = x[:, :, None] * Bt[None, :, :]
        a_cum, b_cum = tl.associative_scan((a, bx), axis=1, combine_fn=_combine)
        hs = a_cum * h0[:, None, :] + b_cum  # (BD, T, BN)

        if HAS_Z:
            z = tl.load(z_ptr + b * s_z_b + d[:, None] * s_z_d + t[None, :] * s_z_l, mask=mask,
                        other=0.0).to(tl.float32)
            dy, dz = _gate_grad(dout, tl.sum(hs * Ct[None, :, :], axis=2) + u * Dv[:, None], z)
            tl.store(dz_ptr + io_base + t[None, :] * s_io_l, dz, mask=mask)
        else:
            dy = dout
        # adjoint: g_t = C_t dy_t + a_{t+1} g_{t+1}; what comes after the chunk enters through carry
        last = (tt == CHUNK - 1)[None, :, None]
        rhs = dy[:, :, None] * Ct[None, :, :] + tl.where(last, a_next * carry[:, None, :], 0.0)
        _, gs = tl.associative_scan((a_next, rhs), axis=1, combine_fn=_combine, reverse=True)

        dx = tl.sum(gs * Bt[None, :, :], axis=2)  # (BD, T)
        gh = gs * (hs - bx)  # g_t a_t h_{t-1}
        ddt = dx * u + tl.sum(gh * A[:, None, :], axis=2)
        dA_acc += tl.sum(gh * dt[:, :, None], axis=1)
        du = dx * dt
        if HAS_D:
            du += dy * Dv[:, None]
            dD_acc += tl.sum(dy * u, axis=1)
        tl.store(du_ptr + io_base + t[None, :] * s_io_l, du, mask=mask)
        if DELTA_SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(mask, ddt, 0.0)
        tl.store(ddelta_ptr + io_base + t[None, :] * s_io_l, ddt, mask=mask)
        dbias_acc += tl.sum(ddt, axis=1)
        dB_part = tl.sum(gs * x[:, :, None], axis=0)  # (T, BN)
        dC_part = tl.sum(hs * dy[:, :, None], axis=0)
        if DETERMINISTIC:
            tl.store(dB_base + t[:, None] * s_dB_l, dB_part, mask=mask_tn)
            tl.store(dC_base + t[:, None] * s_dB_l, dC_part, mask=mask_tn)
        else:
            tl.atomic_add(dB_base + t[:, None] * s_dB_l, dB_part, mask=mask_tn)
            tl.atomic_add(dC_base + t[:, None] * s_dB_l, dC_part, mask=mask_tn)
        first = (tt == 0)[None, :, None]
        carry = tl.sum(tl.where(first, gs, 0.0), axis=1)  # g at the chunk's first step
        if HAS_INIT:
            dinit = tl.sum(tl.where(first, gs * a, 0.0), axis=1)  # a_0 g_0 after the last chunk
    tl.store(part_ptr + (b * n_seg + s) * s_part + _dn(d, n, dim, N, 0), dA_acc, mask=mask_dn)
    if HAS_INIT:
        tl.store(dinit_ptr + _dn(d, n, dim, N, b), dinit, mask=mask_dn & (s == 0))
    _store_channel_partials(part_ptr, part, N, dim, dD_acc, dbias_acc, mask_d, HAS_D,
                            HAS_DELTA_BIAS)
