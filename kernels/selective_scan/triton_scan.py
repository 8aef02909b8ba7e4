"""Fused Triton selective scan (Mamba-1 / S6): forward and backward with recomputation.

Layout, as in mamba_ssm's ``ops/triton`` and fla's ``ops/<op>/``: ``@triton.jit`` kernels ->
Python launchers (``_fwd``, ``_bwd``) -> ``SelectiveScanTriton`` (autograd) ->
``selective_scan_triton``.

One program owns (one batch row, a block of BLOCK_D channels) and marches along L in chunks of
CHUNK steps, carrying the (BLOCK_D, N) fp32 state in registers. The forward writes y, the final
state and, for backward, the state entering each chunk, (batch, dim, n_chunks, N): never a
(batch, dim, L, N) tensor. Two kernel variants of each direction exist (FWD_VARIANT, BWD_VARIANT):

- "loop" (the default; fastest on an H100, docs/kernel_tuning_notes.md): one time step per loop
  iteration, h = exp(Δ_t A) h + Δ_t u_t B_t, y_t = C_t h + D u_t, gated by silu(z_t). Backward
  reruns a chunk forward from its saved state into a per-program scratch (CHUNK, BLOCK_D, N),
  then walks it backwards with the adjoint g_t = exp(Δ_{t+1} A) g_{t+1} + C_t dy_t in registers.
- "scan": the chunk's recurrence h_t = a_t h_{t-1} + b_t is solved for all (channel, step,
  state) at once with ``tl.associative_scan`` over (a, b) pairs on a (BLOCK_D, CHUNK, N) tile;
  backward recomputes the chunk the same way and solves the adjoint with a reverse scan.

Both form every gradient from (h_t, g_t), using a_t h_{t-1} = h_t - b_t so that no shifted copy of
h is needed; the gradient arriving through the returned final state seeds g_{L-1}.
seq_idx (batch, L): a_t is multiplied by [seq_idx_t == seq_idx_{t-1}], so the state restarts from
zero where the index changes, in forward and backward alike.
"""

import torch
import triton
import triton.language as tl

MAX_N = 256
# Default tiles, from the sweep on an H100 (docs/kernel_tuning_notes.md): CHUNK steps per chunk
# (shared by forward and backward: the forward saves one state per chunk), the kernel variant
# ("loop": one step at a time, state in registers; "scan": tl.associative_scan over each chunk),
# channels per program and warps per program.
CHUNK = 32
FWD_VARIANT, FWD_BLOCK_D, FWD_WARPS = "loop", 16, 1
BWD_VARIANT, BWD_BLOCK_D, BWD_WARPS = "loop", 32, 1
PROGRAMS_PER_SM = 4  # below this many programs per SM, BLOCK_D halves (down to 2) to fill the GPU
PARTIALS_BUDGET = 2 << 30  # most bytes of deterministic dB/dC partials that a smaller BLOCK_D may cost
MAX_TILE = 8192  # most elements of one (BLOCK_D, CHUNK, BLOCK_N) register tile for large N


def _empty(*shape, like, dtype=None):
    """Uninitialised output buffer (tests swap in a NaN-filled one to catch unwritten elements)."""
    return torch.empty(*shape, device=like.device, dtype=dtype or like.dtype)


@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): h -> a2 * (a1 * h + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _dt_tile(delta_ptr, bias, offs, mask, HAS_DELTA_BIAS: tl.constexpr, DELTA_SOFTPLUS: tl.constexpr):
    """Δ for a (BLOCK_D, CHUNK) tile in fp32, zero where masked (so exp(ΔA) = 1 and ΔBu = 0)."""
    dt = tl.load(delta_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_DELTA_BIAS:
        dt = dt + bias[:, None]
    if DELTA_SOFTPLUS:
        dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
    return tl.where(mask, dt, 0.0)


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, init_ptr, seq_ptr,
    y_ptr, states_ptr, final_ptr,
    dim, L, N, dim_per_group, n_chunks,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l,
    s_seq_b, s_seq_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ_IDX: tl.constexpr,
    WRITE_STATES: tl.constexpr,
    BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    d = pid_d.to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)  # (BD,)
    n = tl.arange(0, BLOCK_N).to(tl.int64)  # (BN,)
    tt = tl.arange(0, CHUNK).to(tl.int64)  # (T,)
    mask_d = d < dim
    mask_n = n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    g = (pid_d * BLOCK_D) // dim_per_group

    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=mask_dn, other=0.0).to(tl.float32)  # (BD, BN)
    A2 = A * 1.4426950408889634  # exp(Δ A) = exp2(Δ A log2(e))
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_DELTA_BIAS:
        bias = tl.load(delta_bias_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    state_offs = b * dim * N + d[:, None] * N + n[None, :]  # (BD, BN) into (batch, dim, N)
    if HAS_INIT:
        h = tl.load(init_ptr + state_offs, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)

    u_base = u_ptr + b * s_u_b + d[:, None] * s_u_d
    dt_base = delta_ptr + b * s_dt_b + d[:, None] * s_dt_d
    B_base = B_ptr + b * s_B_b + g * s_B_g + n[None, :] * s_B_n
    C_base = C_ptr + b * s_C_b + g * s_C_g + n[None, :] * s_C_n
    y_base = y_ptr + b * dim * L + d[:, None] * L
    for c in range(0, n_chunks):
        t = c * CHUNK + tt  # (T,)
        mask_t = t < L
        mask = mask_d[:, None] & mask_t[None, :]  # (BD, T)
        if WRITE_STATES:
            tl.store(states_ptr + (b * dim * n_chunks + d[:, None] * n_chunks + c) * N + n[None, :], h,
                     mask=mask_dn)
        u = tl.load(u_base + t[None, :] * s_u_l, mask=mask, other=0.0).to(tl.float32)  # (BD, T)
        dt = _dt_tile(dt_base, bias, t[None, :] * s_dt_l, mask, HAS_DELTA_BIAS, DELTA_SOFTPLUS)
        mask_tn = mask_t[:, None] & mask_n[None, :]
        Bt = tl.load(B_base + t[:, None] * s_B_l, mask=mask_tn, other=0.0).to(tl.float32)  # (T, BN)
        Ct = tl.load(C_base + t[:, None] * s_C_l, mask=mask_tn, other=0.0).to(tl.float32)  # (T, BN)
        a = tl.exp2(dt[:, :, None] * A2[:, None, :])  # (BD, T, BN) exp(Δ A)
        if HAS_SEQ_IDX:
            s_cur = tl.load(seq_ptr + b * s_seq_b + t * s_seq_l, mask=mask_t, other=0)
            s_prev = tl.load(seq_ptr + b * s_seq_b + (t - 1) * s_seq_l, mask=mask_t & (t > 0), other=0)
            same = (s_cur == s_prev) | (t == 0) | (~mask_t)
            a = a * same.to(tl.float32)[None, :, None]
        bx = (dt * u)[:, :, None] * Bt[None, :, :]  # (BD, T, BN)
        a_cum, b_cum = tl.associative_scan((a, bx), axis=1, combine_fn=_combine)
        hs = a_cum * h[:, None, :] + b_cum  # (BD, T, BN) state after each step
        y = tl.sum(hs * Ct[None, :, :], axis=2)  # (BD, T)
        if HAS_D:
            y += u * Dv[:, None]
        if HAS_Z:
            z = tl.load(z_ptr + b * s_z_b + d[:, None] * s_z_d + t[None, :] * s_z_l, mask=mask,
                        other=0.0).to(tl.float32)
            y *= z * tl.sigmoid(z)
        tl.store(y_base + t[None, :], y, mask=mask)
        # padded steps have a = 1 and b = 0, so the last row of the tile is the state after step L-1
        h = tl.sum(tl.where((tt == CHUNK - 1)[None, :, None], hs, 0.0), axis=1)  # (BD, BN)
    tl.store(final_ptr + state_offs, h, mask=mask_dn)


@triton.jit
def _scan_fwd_loop_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, init_ptr, seq_ptr,
    y_ptr, states_ptr, final_ptr,
    dim, L, N, dim_per_group, n_chunks,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l,
    s_seq_b, s_seq_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ_IDX: tl.constexpr,
    WRITE_STATES: tl.constexpr,
    BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """The forward one step at a time (the "loop" variant): same contract as _scan_fwd_kernel."""
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    d = pid_d.to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)  # (BD,)
    n = tl.arange(0, BLOCK_N).to(tl.int64)  # (BN,)
    mask_d = d < dim
    mask_n = n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    g = (pid_d * BLOCK_D) // dim_per_group

    A2 = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=mask_dn, other=0.0).to(tl.float32) * 1.4426950408889634
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_DELTA_BIAS:
        bias = tl.load(delta_bias_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
    state_offs = b * dim * N + d * N  # (BD,)
    if HAS_INIT:
        h = tl.load(init_ptr + state_offs[:, None] + n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    u_base = u_ptr + b * s_u_b + d * s_u_d
    dt_base = delta_ptr + b * s_dt_b + d * s_dt_d
    z_base = z_ptr + b * s_z_b + d * s_z_d
    B_base = B_ptr + b * s_B_b + g * s_B_g + n * s_B_n
    C_base = C_ptr + b * s_C_b + g * s_C_g + n * s_C_n
    y_base = y_ptr + b * dim * L + d * L
    for c in range(0, n_chunks):
        if WRITE_STATES:
            tl.store(states_ptr + (b * dim * n_chunks + d[:, None] * n_chunks + c) * N + n[None, :], h,
                     mask=mask_dn)
        for i in range(0, CHUNK):
            t = c * CHUNK + i
            m = mask_d & (t < L)
            u = tl.load(u_base + t * s_u_l, mask=m, other=0.0).to(tl.float32)  # (BD,)
            dt = tl.load(dt_base + t * s_dt_l, mask=m, other=0.0).to(tl.float32)
            if HAS_DELTA_BIAS:
                dt += bias
            if DELTA_SOFTPLUS:
                dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
            dt = tl.where(m, dt, 0.0)
            Bt = tl.load(B_base + t * s_B_l, mask=mask_n & (t < L), other=0.0).to(tl.float32)  # (BN,)
            Ct = tl.load(C_base + t * s_C_l, mask=mask_n & (t < L), other=0.0).to(tl.float32)
            a = tl.exp2(dt[:, None] * A2)  # (BD, BN)
            if HAS_SEQ_IDX:
                s_cur = tl.load(seq_ptr + b * s_seq_b + t * s_seq_l, mask=t < L, other=0)
                s_prev = tl.load(seq_ptr + b * s_seq_b + (t - 1) * s_seq_l, mask=(t > 0) & (t < L),
                                 other=0)
                a = a * ((s_cur == s_prev) | (t == 0) | (t >= L)).to(tl.float32)
            h = a * h + (dt * u)[:, None] * Bt[None, :]
            y = tl.sum(h * Ct[None, :], axis=1)  # (BD,)
            if HAS_D:
                y += u * Dv
            if HAS_Z:
                z = tl.load(z_base + t * s_z_l, mask=m, other=0.0).to(tl.float32)
                y *= z * tl.sigmoid(z)
            tl.store(y_base + t, y, mask=m)
    tl.store(final_ptr + state_offs[:, None] + n[None, :], h, mask=mask_dn)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, seq_ptr,
    states_ptr, dout_ptr, dfinal_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dinit_ptr,
    dim, L, N, dim_per_group, n_chunks,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l,
    s_seq_b, s_seq_l,
    s_do_b, s_do_d, s_do_l,
    s_dB_b, s_dB_blk, s_dB_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ_IDX: tl.constexpr,
    HAS_DFINAL: tl.constexpr, DETERMINISTIC: tl.constexpr,
    BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    d = pid_d.to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    n = tl.arange(0, BLOCK_N).to(tl.int64)
    tt = tl.arange(0, CHUNK).to(tl.int64)
    mask_d = d < dim
    mask_n = n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    g = (pid_d * BLOCK_D) // dim_per_group

    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    A2 = A * 1.4426950408889634
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_DELTA_BIAS:
        bias = tl.load(delta_bias_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    state_offs = b * dim * N + d[:, None] * N + n[None, :]
    if HAS_DFINAL:
        carry = tl.load(dfinal_ptr + state_offs, mask=mask_dn, other=0.0).to(tl.float32)  # dL/dh_{L-1}
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
    io_base = b * dim * L + d[:, None] * L  # du, ddelta, dz are allocated contiguous
    if DETERMINISTIC:
        dB_base = dB_ptr + b * s_dB_b + pid_d * s_dB_blk + n[None, :] * s_dB_n
        dC_base = dC_ptr + b * s_dB_b + pid_d * s_dB_blk + n[None, :] * s_dB_n
    else:
        dB_base = dB_ptr + b * s_dB_b + g * s_dB_blk + n[None, :] * s_dB_n
        dC_base = dC_ptr + b * s_dB_b + g * s_dB_blk + n[None, :] * s_dB_n
    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        t = c * CHUNK + tt
        mask_t = t < L
        mask = mask_d[:, None] & mask_t[None, :]
        mask_tn = mask_t[:, None] & mask_n[None, :]
        h0 = tl.load(states_ptr + (b * dim * n_chunks + d[:, None] * n_chunks + c) * N + n[None, :],
                     mask=mask_dn, other=0.0)
        u = tl.load(u_base + t[None, :] * s_u_l, mask=mask, other=0.0).to(tl.float32)
        dt = _dt_tile(dt_base, bias, t[None, :] * s_dt_l, mask, HAS_DELTA_BIAS, DELTA_SOFTPLUS)
        # Δ one step ahead, for a_{t+1}; zero past the end so that a_{L-1+1} = 1 passes dfinal through
        mask_next = mask_d[:, None] & (t + 1 < L)[None, :]
        dt_next = _dt_tile(dt_base, bias, (t + 1)[None, :] * s_dt_l, mask_next, HAS_DELTA_BIAS,
                           DELTA_SOFTPLUS)
        Bt = tl.load(B_base + t[:, None] * s_B_l, mask=mask_tn, other=0.0).to(tl.float32)
        Ct = tl.load(C_base + t[:, None] * s_C_l, mask=mask_tn, other=0.0).to(tl.float32)
        dout = tl.load(do_base + t[None, :] * s_do_l, mask=mask, other=0.0).to(tl.float32)

        a = tl.exp2(dt[:, :, None] * A2[:, None, :])  # (BD, T, BN) exp(Δ A)
        a_next = tl.exp2(dt_next[:, :, None] * A2[:, None, :])
        if HAS_SEQ_IDX:
            s_cur = tl.load(seq_ptr + b * s_seq_b + t * s_seq_l, mask=mask_t, other=0)
            s_prev = tl.load(seq_ptr + b * s_seq_b + (t - 1) * s_seq_l, mask=mask_t & (t > 0), other=0)
            s_next = tl.load(seq_ptr + b * s_seq_b + (t + 1) * s_seq_l, mask=t + 1 < L, other=0)
            same = (s_cur == s_prev) | (t == 0) | (~mask_t)
            same_next = (s_next == s_cur) | (t + 1 >= L)
            a = a * same.to(tl.float32)[None, :, None]
            a_next = a_next * same_next.to(tl.float32)[None, :, None]
        x = dt * u  # (BD, T)
        bx = x[:, :, None] * Bt[None, :, :]
        a_cum, b_cum = tl.associative_scan((a, bx), axis=1, combine_fn=_combine)
        hs = a_cum * h0[:, None, :] + b_cum  # (BD, T, BN)

        if HAS_Z:
            z = tl.load(z_ptr + b * s_z_b + d[:, None] * s_z_d + t[None, :] * s_z_l, mask=mask,
                        other=0.0).to(tl.float32)
            sig = tl.sigmoid(z)
            y = tl.sum(hs * Ct[None, :, :], axis=2)
            if HAS_D:
                y += u * Dv[:, None]
            dz = dout * y * sig * (1.0 + z * (1.0 - sig))
            tl.store(dz_ptr + io_base + t[None, :], dz, mask=mask)
            dy = dout * z * sig
        else:
            dy = dout
        # adjoint: g_t = C_t dy_t + a_{t+1} g_{t+1}; the step after the chunk enters through carry
        last = (tt == CHUNK - 1)[None, :, None]
        rhs = dy[:, :, None] * Ct[None, :, :] + tl.where(last, a_next * carry[:, None, :], 0.0)
        _, gs = tl.associative_scan((a_next, rhs), axis=1, combine_fn=_combine, reverse=True)

        dx = tl.sum(gs * Bt[None, :, :], axis=2)  # (BD, T)
        hm = hs - bx  # a_t h_{t-1}
        gh = gs * hm
        ddt = dx * u + tl.sum(gh * A[:, None, :], axis=2)
        dA_acc += tl.sum(gh * dt[:, :, None], axis=1)
        du = dx * dt
        if HAS_D:
            du += dy * Dv[:, None]
            dD_acc += tl.sum(dy * u, axis=1)
        tl.store(du_ptr + io_base + t[None, :], du, mask=mask)
        if DELTA_SOFTPLUS:
            raw = tl.load(dt_base + t[None, :] * s_dt_l, mask=mask, other=0.0).to(tl.float32)
            if HAS_DELTA_BIAS:
                raw += bias[:, None]
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(mask, ddt, 0.0)
        tl.store(ddelta_ptr + io_base + t[None, :], ddt, mask=mask)
        if HAS_DELTA_BIAS:
            dbias_acc += tl.sum(ddt, axis=1)
        dB_part = tl.sum(gs * x[:, :, None], axis=0)  # (T, BN)
        dC_part = tl.sum(hs * dy[:, :, None], axis=0)
        if DETERMINISTIC:
            tl.store(dB_base + t[:, None], dB_part, mask=mask_tn)
            tl.store(dC_base + t[:, None], dC_part, mask=mask_tn)
        else:
            tl.atomic_add(dB_base + t[:, None], dB_part, mask=mask_tn)
            tl.atomic_add(dC_base + t[:, None], dC_part, mask=mask_tn)
        first = (tt == 0)[None, :, None]
        carry = tl.sum(tl.where(first, gs, 0.0), axis=1)  # g at the chunk's first step
        if HAS_INIT:
            dinit = tl.sum(tl.where(first, gs * a, 0.0), axis=1)  # a_0 g_0 after the last iteration
    tl.store(dA_ptr + state_offs, dA_acc, mask=mask_dn)
    if HAS_INIT:
        tl.store(dinit_ptr + state_offs, dinit, mask=mask_dn)
    if HAS_D:
        tl.store(dD_ptr + b * dim + d, dD_acc, mask=mask_d)
    if HAS_DELTA_BIAS:
        tl.store(dbias_ptr + b * dim + d, dbias_acc, mask=mask_d)


@triton.jit
def _step_inputs(u_base, dt_base, B_base, seq_base, t, m, mask_n, bias, A2, s_u_l, s_dt_l, s_B_l,
                 s_seq_l, L, HAS_DELTA_BIAS: tl.constexpr, DELTA_SOFTPLUS: tl.constexpr,
                 HAS_SEQ_IDX: tl.constexpr):
    """Step t of the loop kernels: u, Δ (zero where masked), B_t and a_t = exp(Δ A) (0 at a reset)."""
    u = tl.load(u_base + t * s_u_l, mask=m, other=0.0).to(tl.float32)  # (BD,)
    raw = tl.load(dt_base + t * s_dt_l, mask=m, other=0.0).to(tl.float32)
    if HAS_DELTA_BIAS:
        raw += bias
    dt = raw
    if DELTA_SOFTPLUS:
        dt = tl.where(raw <= 20.0, tl.log(1.0 + tl.exp(raw)), raw)
    dt = tl.where(m, dt, 0.0)
    Bt = tl.load(B_base + t * s_B_l, mask=mask_n & (t < L), other=0.0).to(tl.float32)  # (BN,)
    a = tl.exp2(dt[:, None] * A2)  # (BD, BN)
    if HAS_SEQ_IDX:
        s_cur = tl.load(seq_base + t * s_seq_l, mask=t < L, other=0)
        s_prev = tl.load(seq_base + (t - 1) * s_seq_l, mask=(t > 0) & (t < L), other=0)
        a = a * ((s_cur == s_prev) | (t == 0) | (t >= L)).to(tl.float32)
    return u, raw, dt, Bt, a


@triton.jit
def _scan_bwd_loop_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, seq_ptr,
    states_ptr, dout_ptr, dfinal_ptr, scratch_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dinit_ptr,
    dim, L, N, dim_per_group, n_chunks,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l,
    s_seq_b, s_seq_l,
    s_do_b, s_do_d, s_do_l,
    s_dB_b, s_dB_blk, s_dB_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ_IDX: tl.constexpr,
    HAS_DFINAL: tl.constexpr, DETERMINISTIC: tl.constexpr,
    BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Backward one step at a time (the "loop" variant), same contract as _scan_bwd_kernel.

    Per chunk (last first): rerun the chunk forward from its saved state, parking h_t in this
    program's slice of `scratch` (CHUNK, BLOCK_D, BLOCK_N); then walk it backwards with the adjoint
    g_t = a_{t+1} g_{t+1} + C_t dy_t in registers.
    """
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    d = pid_d.to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    n = tl.arange(0, BLOCK_N).to(tl.int64)
    mask_d = d < dim
    mask_n = n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    g_idx = (pid_d * BLOCK_D) // dim_per_group

    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    A2 = A * 1.4426950408889634
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_DELTA_BIAS:
        bias = tl.load(delta_bias_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    state_offs = b * dim * N + d[:, None] * N + n[None, :]
    if HAS_DFINAL:
        g = tl.load(dfinal_ptr + state_offs, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        g = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    a_next = tl.full([BLOCK_D, BLOCK_N], 1.0, dtype=tl.float32)  # a_{t+1}; 1 after the last step
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)

    u_base = u_ptr + b * s_u_b + d * s_u_d
    dt_base = delta_ptr + b * s_dt_b + d * s_dt_d
    z_base = z_ptr + b * s_z_b + d * s_z_d
    do_base = dout_ptr + b * s_do_b + d * s_do_d
    B_base = B_ptr + b * s_B_b + g_idx * s_B_g + n * s_B_n
    C_base = C_ptr + b * s_C_b + g_idx * s_C_g + n * s_C_n
    seq_base = seq_ptr + b * s_seq_b
    io_base = b * dim * L + d * L
    n_blocks = tl.num_programs(0)
    scratch = (scratch_ptr + (b * n_blocks + pid_d) * CHUNK * BLOCK_D * BLOCK_N
               + tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + n[None, :])  # (BD, BN) at step 0
    if DETERMINISTIC:
        dB_base = dB_ptr + b * s_dB_b + pid_d * s_dB_blk + n * s_dB_n
        dC_base = dC_ptr + b * s_dB_b + pid_d * s_dB_blk + n * s_dB_n
    else:
        dB_base = dB_ptr + b * s_dB_b + g_idx * s_dB_blk + n * s_dB_n
        dC_base = dC_ptr + b * s_dB_b + g_idx * s_dB_blk + n * s_dB_n
    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        h = tl.load(states_ptr + (b * dim * n_chunks + d[:, None] * n_chunks + c) * N + n[None, :],
                    mask=mask_dn, other=0.0)
        for j in range(0, CHUNK):
            t = c * CHUNK + j
            m = mask_d & (t < L)
            u, raw, dt, Bt, a = _step_inputs(u_base, dt_base, B_base, seq_base, t, m, mask_n, bias, A2,
                                             s_u_l, s_dt_l, s_B_l, s_seq_l, L, HAS_DELTA_BIAS,
                                             DELTA_SOFTPLUS, HAS_SEQ_IDX)
            h = a * h + (dt * u)[:, None] * Bt[None, :]
            tl.store(scratch + j * BLOCK_D * BLOCK_N, h)
        tl.debug_barrier()
        for j in range(0, CHUNK):
            jj = CHUNK - 1 - j
            t = c * CHUNK + jj
            m = mask_d & (t < L)
            u, raw, dt, Bt, a = _step_inputs(u_base, dt_base, B_base, seq_base, t, m, mask_n, bias, A2,
                                             s_u_l, s_dt_l, s_B_l, s_seq_l, L, HAS_DELTA_BIAS,
                                             DELTA_SOFTPLUS, HAS_SEQ_IDX)
            h = tl.load(scratch + jj * BLOCK_D * BLOCK_N)  # h_t
            Ct = tl.load(C_base + t * s_C_l, mask=mask_n & (t < L), other=0.0).to(tl.float32)
            dout = tl.load(do_base + t * s_do_l, mask=m, other=0.0).to(tl.float32)
            if HAS_Z:
                z = tl.load(z_base + t * s_z_l, mask=m, other=0.0).to(tl.float32)
                sig = tl.sigmoid(z)
                y = tl.sum(h * Ct[None, :], axis=1)
                if HAS_D:
                    y += u * Dv
                tl.store(dz_ptr + io_base + t, dout * y * sig * (1.0 + z * (1.0 - sig)), mask=m)
                dy = dout * z * sig
            else:
                dy = dout
            x = dt * u
            g = a_next * g + dy[:, None] * Ct[None, :]  # (BD, BN)
            dx = tl.sum(g * Bt[None, :], axis=1)
            gh = g * (h - x[:, None] * Bt[None, :])  # g_t a_t h_{t-1}
            ddt = dx * u + tl.sum(gh * A, axis=1)
            dA_acc += gh * dt[:, None]
            du = dx * dt
            if HAS_D:
                du += dy * Dv
                dD_acc += dy * u
            tl.store(du_ptr + io_base + t, du, mask=m)
            if DELTA_SOFTPLUS:
                ddt = ddt * tl.sigmoid(raw)
            ddt = tl.where(m, ddt, 0.0)
            tl.store(ddelta_ptr + io_base + t, ddt, mask=m)
            if HAS_DELTA_BIAS:
                dbias_acc += ddt
            dB_t = tl.sum(g * x[:, None], axis=0)  # (BN,)
            dC_t = tl.sum(h * dy[:, None], axis=0)
            mask_bn = mask_n & (t < L)
            if DETERMINISTIC:
                tl.store(dB_base + t, dB_t, mask=mask_bn)
                tl.store(dC_base + t, dC_t, mask=mask_bn)
            else:
                tl.atomic_add(dB_base + t, dB_t, mask=mask_bn)
                tl.atomic_add(dC_base + t, dC_t, mask=mask_bn)
            a_next = a
        tl.debug_barrier()
    tl.store(dA_ptr + state_offs, dA_acc, mask=mask_dn)
    if HAS_INIT:
        tl.store(dinit_ptr + state_offs, a_next * g, mask=mask_dn)  # a_0 g_0
    if HAS_D:
        tl.store(dD_ptr + b * dim + d, dD_acc, mask=mask_d)
    if HAS_DELTA_BIAS:
        tl.store(dbias_ptr + b * dim + d, dbias_acc, mask=mask_d)


def _pow2_divisor(x: int, cap: int) -> int:
    """Largest power of two <= cap that divides x."""
    p = 1
    while p * 2 <= cap and x % (p * 2) == 0:
        p *= 2
    return p


def _config(dim, N, groups, block_d, chunk, fit_chunk, tile_steps=None):
    """Tile sizes (BLOCK_D, CHUNK, BLOCK_N); a channel block never straddles a B/C group.

    Large N shrinks BLOCK_D, then (if fit_chunk) CHUNK, to keep the (BLOCK_D, tile_steps, BLOCK_N)
    register tile within MAX_TILE; tile_steps defaults to CHUNK (1 for the step-by-step loop).
    """
    block_n = max(triton.next_power_of_2(N), 2)
    chunk = max(2, triton.next_power_of_2(chunk))
    block_d = triton.next_power_of_2(block_d)
    while block_d > 1 and block_d * (tile_steps or chunk) * block_n > MAX_TILE:
        block_d //= 2
    while fit_chunk and chunk > 8 and block_d * chunk * block_n > MAX_TILE:
        chunk //= 2
    if groups > 1:
        block_d = _pow2_divisor(dim // groups, block_d)
    return block_d, chunk, block_n


def _fill_gpu(block_d, batch, dim, device, partial_bytes=None):
    """Halve BLOCK_D while fewer than PROGRAMS_PER_SM programs per SM would run (small batch x dim,
    e.g. batch 1), as long as the deterministic partials (bytes per channel block) stay in budget."""
    if device.type != "cuda":
        return block_d
    target = PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count
    while block_d > 2 and batch * triton.cdiv(dim, block_d) < target:
        if partial_bytes and batch * triton.cdiv(dim, block_d // 2) * partial_bytes > PARTIALS_BUDGET:
            break
        block_d //= 2
    return block_d


def _bc_strides(M):
    """(batch, G, N, L) strides of B or C, with G = 1 (stride 0) for (batch, N, L)."""
    if M.dim() == 3:
        return M.stride(0), 0, M.stride(1), M.stride(2)
    return M.stride(0), M.stride(1), M.stride(2), M.stride(3)


def _fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus, write_states,
         block_d=None, chunk=None, num_warps=None, variant=None):
    batch, dim, L = u.shape
    N = A.shape[1]
    groups = 1 if B.dim() == 3 else B.shape[1]
    loop = (variant or FWD_VARIANT) == "loop"
    if block_d is None and loop:
        block_d = _fill_gpu(FWD_BLOCK_D, batch, dim, u.device)
    BD, T, BN = _config(dim, N, groups, block_d or FWD_BLOCK_D, chunk or CHUNK, chunk is None and not loop,
                        1 if loop else None)
    n_chunks = triton.cdiv(L, T)
    A = A.contiguous()
    y = _empty(batch, dim, L, like=u)
    final = _empty(batch, dim, N, like=u, dtype=torch.float32)
    states = _empty(batch, dim, n_chunks, N, like=u, dtype=torch.float32) if write_states else None
    init = initial_state.contiguous() if initial_state is not None else None
    dummy = u
    grid = (triton.cdiv(dim, BD), batch)
    kernel = _scan_fwd_loop_kernel if loop else _scan_fwd_kernel
    kernel[grid](
        u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
        delta_bias if delta_bias is not None else dummy, init if init is not None else dummy,
        seq_idx if seq_idx is not None else dummy,
        y, states if states is not None else dummy, final,
        dim, L, N, dim // groups, n_chunks,
        *u.stride(), *delta.stride(), *_bc_strides(B), *_bc_strides(C),
        *(z.stride() if z is not None else (0, 0, 0)),
        *(seq_idx.stride() if seq_idx is not None else (0, 0)),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        DELTA_SOFTPLUS=delta_softplus, HAS_INIT=init is not None, HAS_SEQ_IDX=seq_idx is not None,
        WRITE_STATES=write_states, BLOCK_D=BD, CHUNK=T, BLOCK_N=BN, num_warps=num_warps or FWD_WARPS,
    )
    return y, final, states, T


def _bwd(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus, states,
         chunk, dout, dfinal, deterministic, block_d=None, num_warps=None, variant=None):
    batch, dim, L = u.shape
    N = A.shape[1]
    groups = 1 if B.dim() == 3 else B.shape[1]
    loop = (variant or BWD_VARIANT) == "loop"
    if block_d is None and loop:
        block_d = _fill_gpu(BWD_BLOCK_D, batch, dim, u.device, 2 * N * L * 4 if deterministic else None)
    BD, T, BN = _config(dim, N, groups, block_d or BWD_BLOCK_D, chunk, False,
                        1 if loop else None)  # the forward's chunk
    n_chunks = states.shape[2]
    n_blocks = triton.cdiv(dim, BD)
    dev, f32 = u.device, torch.float32
    A = A.contiguous()
    du = _empty(batch, dim, L, like=u)
    ddelta = _empty(batch, dim, L, like=delta)
    dz = _empty(batch, dim, L, like=z) if z is not None else None
    dA_part = _empty(batch, dim, N, like=u, dtype=f32)
    dD_part = _empty(batch, dim, like=u, dtype=f32) if D is not None else None
    dbias_part = _empty(batch, dim, like=u, dtype=f32) if delta_bias is not None else None
    dinit = _empty(batch, dim, N, like=u, dtype=f32) if initial_state is not None else None
    if deterministic:  # one slice per channel block, summed below in a fixed order
        dB = _empty(batch, n_blocks, N, L, like=u, dtype=f32)
        dC = _empty(batch, n_blocks, N, L, like=u, dtype=f32)
    else:
        dB = torch.zeros(batch, groups, N, L, device=dev, dtype=f32)
        dC = torch.zeros(batch, groups, N, L, device=dev, dtype=f32)
    dummy = u
    grid = (n_blocks, batch)
    scratch = (torch.empty(batch * n_blocks * T * BD * BN, device=dev, dtype=f32),) if loop else ()
    (_scan_bwd_loop_kernel if loop else _scan_bwd_kernel)[grid](
        u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
        delta_bias if delta_bias is not None else dummy, seq_idx if seq_idx is not None else dummy,
        states, dout, dfinal if dfinal is not None else dummy, *scratch,
        du, ddelta, dz if dz is not None else dummy, dA_part, dB, dC,
        dD_part if dD_part is not None else dummy, dbias_part if dbias_part is not None else dummy,
        dinit if dinit is not None else dummy,
        dim, L, N, dim // groups, n_chunks,
        *u.stride(), *delta.stride(), *_bc_strides(B), *_bc_strides(C),
        *(z.stride() if z is not None else (0, 0, 0)),
        *(seq_idx.stride() if seq_idx is not None else (0, 0)),
        *dout.stride(), dB.stride(0), dB.stride(1), dB.stride(2),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        DELTA_SOFTPLUS=delta_softplus, HAS_INIT=initial_state is not None,
        HAS_SEQ_IDX=seq_idx is not None, HAS_DFINAL=dfinal is not None, DETERMINISTIC=deterministic,
        BLOCK_D=BD, CHUNK=T, BLOCK_N=BN, num_warps=num_warps or BWD_WARPS,
    )
    if deterministic:
        dB = dB.view(batch, groups, n_blocks // groups, N, L).sum(2)
        dC = dC.view(batch, groups, n_blocks // groups, N, L).sum(2)
    dB = (dB if B.dim() == 4 else dB[:, 0]).to(B.dtype)
    dC = (dC if C.dim() == 4 else dC[:, 0]).to(C.dtype)
    dA = dA_part.sum(0).to(A.dtype)
    dD = dD_part.sum(0).to(D.dtype) if D is not None else None
    dbias = dbias_part.sum(0).to(delta_bias.dtype) if delta_bias is not None else None
    if dinit is not None:
        dinit = dinit.to(initial_state.dtype)
    return du, ddelta, dA, dB, dC, dD, dz, dbias, dinit


class SelectiveScanTriton(torch.autograd.Function):
    """Autograd wrapper: saves the inputs and the chunk-boundary states, recomputes in backward."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus,
                deterministic, block_d, chunk):
        write_states = any(ctx.needs_input_grad[:9])  # forward itself runs under no_grad
        y, final, states, T = _fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx,
                                   delta_softplus, write_states, block_d, chunk)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, states)
        ctx.delta_softplus, ctx.deterministic, ctx.chunk, ctx.block_d = (
            delta_softplus, deterministic, T, block_d)
        ctx.set_materialize_grads(False)
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, states = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros_like(u)
        grads = _bwd(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx,
                     ctx.delta_softplus, states, ctx.chunk, dy,
                     dfinal.contiguous() if dfinal is not None else None, ctx.deterministic,
                     ctx.block_d)
        du, ddelta, dA, dB, dC, dD, dz, dbias, dinit = grads
        return du, ddelta, dA, dB, dC, dD, dz, dbias, dinit, None, None, None, None, None


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          initial_state=None, return_final_state=False, seq_idx=None,
                          deterministic=True, *, block_d=None, chunk_size=None):
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
        block_d, chunk_size: tile sizes (channels per program, steps per chunk); None picks them.
    Returns:
        y (batch, dim, L) in u's dtype, and the final state (batch, dim, N) fp32 if asked.
    """
    if A.shape[1] > MAX_N:
        raise ValueError(f"A: state size N={A.shape[1]} exceeds the Triton kernel's maximum {MAX_N}")
    y, final = SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx,
                                         delta_softplus, deterministic, block_d, chunk_size)
    return (y, final) if return_final_state else y


__all__ = ["selective_scan_triton", "SelectiveScanTriton", "MAX_N"]
