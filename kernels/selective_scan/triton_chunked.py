"""The "chunked" Triton backward: time across a chunk solved at once, one state at a time.

Same contract as triton_recurrent._bwd_recurrent_kernel (a program owns a channel block, a batch
row and a segment, and walks its segment's chunks last first), with mamba_ssm's order of loops
instead of the recurrent kernel's: for each chunk, a loop over the states n, and for each state
the whole (CHUNK, BLOCK_D) tile of steps x channels at once.

For state n of a chunk, from the chunk's saved entry state h0 and the adjoint g_in arriving from
the chunk after it:

    a_t = exp(Δ_t A_n), h_t = a_t h_{t-1} + Δ_t u_t B_t         (forward scan over the chunk)
    g_t = a_{t+1} g_{t+1} + C_t dy_t                          (reverse scan, from g_in)

both by `tl.associative_scan` along the chunk axis, which the tile keeps inside each thread (one
channel a lane: the channel offsets are declared 1-aligned, as the forward's state tiles are), so
a scan is a chain of multiply-adds in registers. Nothing of the chunk is written to a scratch:
the gradients are formed from the two scans' tiles at once, with the sums over states (y for the
gate, dx, the Δ gradient's Σ_n g a h A) accumulated across the loop in registers and the sums over
channels (dB_t, dC_t for each step) by a transposed butterfly across lanes (`_lane_sums`).

Where the recurrent backward runs one dependent step at a time (each waiting on its loads and the
layout moves of a step), every instruction here works on a whole chunk of steps; the price is a
second exp a step and state (a_{t+1} for the reverse scan) and an in-register scan's combines.
The exp of each step's decay is recomputed for the reverse scan rather than shifted across the
chunk axis (which Triton cannot express without data movement).
"""

import triton
import triton.language as tl

from .triton_steps import (LOG2E, _channel_params, _combine, _delta, _exit_row, _exp2, _fold,
                           _lane_swap, _program,
                           _same_sequence, _segment_chunks,
                           _store_channel_partials)


@triton.jit
def _lane_sums(x, FOLDS: tl.constexpr, LANE_BITS: tl.constexpr):
    """The sums over the columns (channels, one a lane) of x (T, W = 2^LANE_BITS) for each row
    (step), as (v, t, first), each (T >> FOLDS, W): v holds the sum for row t, to be stored once
    where first. FOLDS levels of triton_steps._fold (each halves the rows a column holds while it
    sums over lane bit k; the rows must be held in each thread, so FOLDS <= log2 of the rows a
    thread holds), then plain exchanges for the remaining lane bits. A tl.sum over the lanes
    would take LANE_BITS shuffles for every row a thread holds; the folds take one for each of
    T / 2 + T / 4 + ... rows. After fold k, row r of column c stands for row
    r + (bit k of c) R_k / 2 of the rows before it (R_k of them)."""
    T: tl.constexpr = x.shape[0]
    W: tl.constexpr = x.shape[1]
    c = tl.arange(0, W)[None, :]
    t = tl.zeros([1, W], dtype=tl.int32)
    for k in tl.static_range(FOLDS):
        x = _fold(x, k)
        t += ((c >> k) & 1) * (T >> (k + 1))
    for k in tl.static_range(FOLDS, LANE_BITS):
        x += _lane_swap(x, 1 << k)
    t = tl.arange(0, T >> FOLDS)[:, None] + t
    return x, t, tl.broadcast_to((c >> FOLDS) == 0, x.shape)


@triton.jit
def _first_row(x, LOG_ROWS: tl.constexpr):
    """Row 0 of x (2^LOG_ROWS, W) as (W,): LOG_ROWS halvings by tl.split, which are register
    moves where each thread holds the rows (a masked tl.sum over them took a select and an add a
    row)."""
    for _ in tl.static_range(LOG_ROWS):
        x, _hi = tl.split(tl.permute(tl.reshape(x, (2, x.shape[0] // 2, x.shape[1])), (1, 2, 0)))
    return tl.reshape(x, (x.shape[1],))


@triton.jit
def _reverse_scan(a, b):
    """tl.associative_scan((a, b), axis=0, combine_fn=_combine, reverse=True), as a forward scan
    of the tiles flipped along the steps: compiled, reverse=True moved every step through
    shuffles (475 `SHFL` for a (32, 32) tile whose steps each thread holds), where tl.flip along
    an axis held in registers costs nothing (compile_check)."""
    a_rev, b_rev = tl.associative_scan((tl.flip(a, 0), tl.flip(b, 0)), axis=0, combine_fn=_combine)
    return tl.flip(a_rev, 0), tl.flip(b_rev, 0)


@triton.jit
def _tile_delta(dt_base, seq_base, t, mask_d, bias, end, s_dt_l, s_seq_l, L,
                DELTA_SOFTPLUS: tl.constexpr, HAS_SEQ_IDX: tl.constexpr):
    """Steps t (T,): raw delta + bias (T, BLOCK_D), Δ (0 at and past `end`: a = 1 and no input
    there) and keep (T, 1), 0 where step t starts a new sequence (1 without seq_idx)."""
    valid = t < end
    m = valid[:, None] & mask_d[None, :]
    raw = tl.load(dt_base + t[:, None] * s_dt_l, mask=m, other=0.0).to(tl.float32) + bias[None, :]
    if HAS_SEQ_IDX:
        keep = (_same_sequence(seq_base, t, L, s_seq_l) | (~valid)).to(tl.float32)[:, None]
    else:
        keep = tl.full([t.shape[0], 1], 1.0, tl.float32)
    return raw, _delta(raw, m, DELTA_SOFTPLUS), keep


@triton.jit
def _bwd_chunked_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, seq_ptr,
    states_ptr, dout_ptr, dexit_ptr, bc_ptr, ypre_ptr,
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
    FOLDS: tl.constexpr, LANE_BITS: tl.constexpr, LOG_CHUNK: tl.constexpr,
):
    """Same arguments and outputs as triton_recurrent._bwd_recurrent_kernel, with bc_ptr in place
    of its scratch and stage: per program, BLOCK_N x (2 CHUNK + BLOCK_D) floats: each chunk's B and
    C copied as float32 with the steps contiguous (a state's steps then load as a row with nothing
    to unpack; B's bf16 values moved to every lane left each lane CHUNK values to unpack, state
    after state), then each state's adjoint carried from chunk to chunk. FOLDS and LANE_BITS: _lane_sums' (log2 BLOCK_D lane bits; folds at most log2 of the
    steps a thread holds); LOG_CHUNK: log2 CHUNK. ypre_ptr (with HAS_Z): the forward's y before the
    gate, C h + D u, laid out as du, which dz needs (summing it over the states here would hold a
    third (CHUNK, BLOCK_D) accumulator across the state loop: compile_check, 1076 -> 913
    instructions a state and chunk without it)."""
    pid_d, b, s, d, n_idx, mask_d, mask_n, mask_nd, g_idx = _program(dim, BLOCK_D, BLOCK_N, N,
                                                                     dim_per_group, True)
    n_seg = tl.num_programs(2)
    n_blocks = tl.num_programs(0)
    _, _, Dv, bias = _channel_params(A_ptr, D_ptr, delta_bias_ptr, d, n_idx, dim, N, mask_d, mask_nd,
                                     HAS_D, HAS_DELTA_BIAS)  # A itself is read a state at a time
    tt = tl.arange(0, CHUNK)
    first, last = (tt == 0)[:, None], (tt == CHUNK - 1)[:, None]
    part = (b * n_seg + s) * s_part  # this program's row of dA (N, dim), dD, dbias partials
    # for every state, the adjoint entering its chunk from the right (the segment's exit adjoint
    # first), a row of BLOCK_D floats after the program's B and C copies, and its dA partial,
    # accumulated in the program's row of partials; each lane reads and writes its own channel's
    # (and the barrier at the top of each chunk orders the rest)
    scratch = bc_ptr + ((b * n_seg + s) * n_blocks + pid_d) * BLOCK_N * (2 * CHUNK + BLOCK_D)
    g_rows = scratch + 2 * BLOCK_N * CHUNK + tl.arange(0, BLOCK_D)
    for n in range(0, N):
        if HAS_DEXIT:
            g0 = tl.load(dexit_ptr + (_exit_row(b, s, exit_rows, exit_split) * N + n) * dim + d,
                         mask=mask_d, other=0.0).to(tl.float32)
        else:
            g0 = tl.zeros([BLOCK_D], dtype=tl.float32)
        tl.store(g_rows + n * BLOCK_D, g0)
        tl.store(part_ptr + part + n * dim + d, tl.zeros([BLOCK_D], dtype=tl.float32), mask=mask_d)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)

    u_base = u_ptr + b * s_u_b + d[None, :] * s_u_d
    dt_base = delta_ptr + b * s_dt_b + d[None, :] * s_dt_d
    z_base = z_ptr + b * s_z_b + d[None, :] * s_z_d
    do_base = dout_ptr + b * s_do_b + d[None, :] * s_do_d
    B_base = B_ptr + b * s_B_b + g_idx * s_B_g
    C_base = C_ptr + b * s_C_b + g_idx * s_C_g
    seq_base = seq_ptr + b * s_seq_b
    io_base = b * s_io_b + d[None, :] * s_io_d  # du, ddelta, dz share one layout
    if DETERMINISTIC:
        dB_base = dBC_ptr + b * s_dB_b + pid_d * s_dB_blk
    else:
        dB_base = dBC_ptr + b * s_dB_b + g_idx * s_dB_blk
    dC_base = dB_base + s_dBC
    bc = scratch + n_idx[None, :] * CHUNK + tt[:, None]  # (CHUNK, BLOCK_N): B's copy, then C's
    bc_row = scratch + tt
    c0, c1, t0, t1 = _segment_chunks(s, chunks_per_seg, n_chunks, CHUNK, L)
    for i in range(0, c1 - c0):
        c = c1 - 1 - i
        t = c * CHUNK + tt
        live = t < t1  # the segment's steps (t1 <= L)
        m = live[:, None] & mask_d[None, :]
        u = tl.load(u_base + t[:, None] * s_u_l, mask=m, other=0.0).to(tl.float32)
        raw, dt, keep = _tile_delta(dt_base, seq_base, t, mask_d, bias, t1, s_dt_l, s_seq_l, L,
                                    DELTA_SOFTPLUS, HAS_SEQ_IDX)
        # step t + 1's Δ for a_{t+1}: 0 past the segment's end, whose adjoint arrives through it
        _, dt_next, keep_next = _tile_delta(dt_base, seq_base, t + 1, mask_d, bias, t1, s_dt_l,
                                            s_seq_l, L, DELTA_SOFTPLUS, HAS_SEQ_IDX)
        dout = tl.load(do_base + t[:, None] * s_do_l, mask=m, other=0.0).to(tl.float32)
        if HAS_Z:
            z = tl.load(z_base + t[:, None] * s_z_l, mask=m, other=0.0).to(tl.float32)
            sig = tl.sigmoid(z)
            dy = dout * z * sig
        else:
            dy = dout
        x = dt * u
        m_tn = live[:, None] & mask_n[None, :]
        tl.debug_barrier()  # the last chunk's copies are read
        tl.store(bc, tl.load(B_base + t[:, None] * s_B_l + n_idx[None, :] * s_B_n, mask=m_tn,
                             other=0.0).to(tl.float32))
        tl.store(bc + BLOCK_N * CHUNK, tl.load(C_base + t[:, None] * s_C_l + n_idx[None, :] * s_C_n,
                                               mask=m_tn, other=0.0).to(tl.float32))
        tl.debug_barrier()  # visible to every lane
        dx_acc = tl.zeros([CHUNK, BLOCK_D], dtype=tl.float32)  # Σ_n g B
        gA_acc = tl.zeros([CHUNK, BLOCK_D], dtype=tl.float32)  # Σ_n g a h_{t-1} A
        for n in range(0, N):
            A_n = tl.load(A_ptr + n * dim + d, mask=mask_d, other=0.0).to(tl.float32)
            A2_n = A_n * LOG2E
            B_n = tl.load(bc_row + n * CHUNK)
            C_n = tl.load(bc_row + (BLOCK_N + n) * CHUNK)
            h0 = tl.load(states_ptr + ((b * n_chunks + c) * N + n) * dim + d, mask=mask_d,
                         other=0.0)
            a = _exp2(dt * A2_n[None, :]) * keep
            bx = x * B_n[:, None]
            # the entry state enters as part of step 0's input (a select each row's register
            # resolves at compile time), so the scan's products of a are never used and go
            _, h = tl.associative_scan((a, tl.where(first, bx + a * h0[None, :], bx)), axis=0,
                                       combine_fn=_combine)  # the state after each step
            g_in = tl.load(g_rows + n * BLOCK_D)
            a_next = _exp2(dt_next * A2_n[None, :]) * keep_next
            rhs = dy * C_n[:, None]
            _, g = _reverse_scan(a_next, tl.where(last, rhs + a_next * g_in[None, :], rhs))
            tl.store(g_rows + n * BLOCK_D, _first_row(g, LOG_CHUNK))
            dx_acc += g * B_n[:, None]
            gh = g * (h - bx)  # g_t a_t h_{t-1}
            gA_acc += gh * A_n[None, :]
            dA = part_ptr + part + n * dim + d
            tl.store(dA, tl.load(dA, mask=mask_d, other=0.0) + tl.sum(gh * dt, axis=0), mask=mask_d)
            v, tv, once = _lane_sums(g * x, FOLDS, LANE_BITS)
            tv = c * CHUNK + tv
            _store_sums(dB_base + n * s_dB_n + tv * s_dB_l, v, once & (tv < t1), DETERMINISTIC)
            v, tv, once = _lane_sums(h * dy, FOLDS, LANE_BITS)
            tv = c * CHUNK + tv
            _store_sums(dC_base + n * s_dB_n + tv * s_dB_l, v, once & (tv < t1), DETERMINISTIC)
            if HAS_INIT:  # a_0 g_0, from the first chunk of the first segment
                tl.store(dinit_ptr + (b * N + n) * dim + d, _first_row(a * g, LOG_CHUNK),
                         mask=mask_d & (s == 0) & (c == 0))
        if HAS_Z:
            y = tl.load(ypre_ptr + io_base + t[:, None] * s_io_l, mask=m, other=0.0).to(tl.float32)
            tl.store(dz_ptr + io_base + t[:, None] * s_io_l, y * (dout * sig * (1.0 + z * (1.0 - sig))),
                     mask=m)
        dy = tl.where(m, dy, 0.0)
        du = dx_acc * dt
        if HAS_D:
            du += dy * Dv[None, :]
            dD_acc += tl.sum(dy * u, axis=0)
        tl.store(du_ptr + io_base + t[:, None] * s_io_l, du, mask=m)
        ddt = dx_acc * u + gA_acc
        if DELTA_SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(m, ddt, 0.0)
        tl.store(ddelta_ptr + io_base + t[:, None] * s_io_l, ddt, mask=m)
        dbias_acc += tl.sum(ddt, axis=0)
    _store_channel_partials(part_ptr, part + d, N, dim, dD_acc, dbias_acc, mask_d, HAS_D,
                            HAS_DELTA_BIAS)


@triton.jit
def _store_sums(ptr, v, mask, DETERMINISTIC: tl.constexpr):
    """A chunk's dB or dC for one state: stored into this channel block's partials
    (DETERMINISTIC) or added to the group's sums by atomics."""
    if DETERMINISTIC:
        tl.store(ptr, v, mask=mask)
    else:
        tl.atomic_add(ptr, v, mask=mask)
