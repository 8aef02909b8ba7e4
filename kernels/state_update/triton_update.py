"""Triton single-step update of the selective SSM (recurrent mode, one token of generation).

One program owns (one batch row, a block of BLOCK_D channels): it reads the (BLOCK_D, N) state,
applies h = exp(Δ A) h + Δ B x, writes it back in place and emits y = (C h + D x) silu(z).
"""

import functools

import torch
import triton
import triton.language as tl

from ..launch import launch


def _empty(*shape, like):
    """Uninitialised output buffer (tests swap in a NaN-filled one to catch unwritten elements)."""
    return torch.empty(*shape, device=like.device, dtype=like.dtype)


@triton.jit
def _state_update_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dt_bias_ptr, y_ptr,
    dim, N, dim_per_group,
    s_st_b, s_st_d, s_st_n,
    s_x_b, s_x_d, s_dt_b, s_dt_d, s_z_b, s_z_d,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_C_b, s_C_g, s_C_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DT_BIAS: tl.constexpr, DT_SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    d = pid_d.to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)  # (BD,)
    n = tl.arange(0, BLOCK_N).to(tl.int64)  # (BN,)
    mask_d = d < dim
    mask_n = n < N
    mask = mask_d[:, None] & mask_n[None, :]
    g = d // dim_per_group  # (BD,) group of each channel

    st_ptrs = state_ptr + b * s_st_b + d[:, None] * s_st_d + n[None, :] * s_st_n
    h = tl.load(st_ptrs, mask=mask, other=0.0)  # (BD, BN)
    x = tl.load(x_ptr + b * s_x_b + d * s_x_d, mask=mask_d, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + b * s_dt_b + d * s_dt_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_DT_BIAS:
        dt += tl.load(dt_bias_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
    if DT_SOFTPLUS:
        dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
    A = tl.load(A_ptr + d[:, None] * s_A_d + n[None, :] * s_A_n, mask=mask, other=0.0).to(tl.float32)
    Bv = tl.load(B_ptr + b * s_B_b + g[:, None] * s_B_g + n[None, :] * s_B_n, mask=mask,
                 other=0.0).to(tl.float32)  # (BD, BN)
    Cv = tl.load(C_ptr + b * s_C_b + g[:, None] * s_C_g + n[None, :] * s_C_n, mask=mask,
                 other=0.0).to(tl.float32)
    h = tl.exp(dt[:, None] * A) * h + (dt * x)[:, None] * Bv
    tl.store(st_ptrs, h, mask=mask)
    y = tl.sum(h * Cv, axis=1)  # (BD,)
    if HAS_D:
        y += x * tl.load(D_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + b * s_z_b + d * s_z_d, mask=mask_d, other=0.0).to(tl.float32)
        y *= z * tl.sigmoid(z)
    tl.store(y_ptr + b * dim + d, y, mask=mask_d)


@functools.lru_cache(maxsize=None)
def _tiles(dim, N):
    """(BLOCK_N, BLOCK_D, channel blocks) of one step, cached: a decode step is a few microseconds,
    and triton's next_power_of_2 and cdiv cost about 1.5 us of host time a call."""
    block_n = max(triton.next_power_of_2(N), 2)
    block_d = max(1, min(triton.next_power_of_2(dim), 4096 // block_n, 64))
    return block_n, block_d, triton.cdiv(dim, block_d)


def selective_state_update_triton(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                                  dt_softplus=False):
    """One recurrent step h = exp(Δ A) h + Δ B x ; y = (C h + D x) silu(z); `state` updated in place.

    Args:
        state: (batch, dim, N) fp32, updated in place (any strides).
        x, dt, z: (batch, dim).  A: (dim, N).  B, C: (batch, N) or (batch, G, N).
        D, dt_bias: (dim,).  dt_softplus: apply softplus to dt + dt_bias.
    Returns:
        y: (batch, dim) in x's dtype.
    """
    batch, dim, N = state.shape
    if B.dim() == 2:
        B, C = B[:, None, :], C[:, None, :]
    groups = B.shape[1]
    y = _empty(batch, dim, like=x)
    block_n, block_d, n_blocks = _tiles(dim, N)
    grid = (n_blocks, batch)
    dummy = x
    launch(
        _state_update_kernel, grid,
        state, x, dt, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
        dt_bias if dt_bias is not None else dummy, y,
        dim, N, dim // groups,
        *state.stride(), *x.stride(), *dt.stride(), *(z.stride() if z is not None else (0, 0)),
        *A.stride(), *B.stride(), *C.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DT_BIAS=dt_bias is not None,
        DT_SOFTPLUS=dt_softplus, BLOCK_D=block_d, BLOCK_N=block_n, num_warps=4,
    )
    return y


__all__ = ["selective_state_update_triton"]
