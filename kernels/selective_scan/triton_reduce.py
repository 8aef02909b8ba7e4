"""The backward's last step: fixed-order sums of the gradient kernels' per-program partials, in one
launch (a training step at small sizes is bound by launches, not by these bytes).

- dB and dC: the gradient kernels write one (L, N) slice per channel block (deterministic mode),
  k = blocks per B/C group of them for each (dB | dC, batch row, group); each output element is
  the sum of its k slices in block order, cast to B's dtype. With atomics (k = 1) it is the cast.
- dA, dD, dΔ-bias: one row of (N + 2) * dim partials per (batch row, segment), summed over the
  rows in order; dA's entries arrive as (N, dim) and leave as A's (dim, N).
"""

import triton
import triton.language as tl

REDUCE_BLOCK = 1024  # output elements per program
REDUCE_WARPS = 4


@triton.jit
def _bwd_reduce_kernel(
    dBC_ptr, part_ptr, dBC_out_ptr, part_out_ptr,
    n_bc, LN, k, n_part, rows, dim, N: tl.constexpr, BLOCK: tl.constexpr,
):
    """Programs [0, cdiv(n_bc, BLOCK)): dBC_out[o] = Σ_{j<k} dBC[o // LN, j, o % LN] over the
    (n_bc // LN, k, LN) partials. The rest: part_out[j'] = Σ_{r<rows} part[r, j] over the
    (rows, n_part) partials, j' = j except for dA's (N, dim) entries, stored as (dim, N)
    (the two branches name their variables apart: Triton requires one type per name)."""
    pid = tl.program_id(0)
    n_bc_programs = tl.cdiv(n_bc, BLOCK)
    if pid < n_bc_programs:
        o = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = o < n_bc
        src = (o // LN) * k * LN + o % LN
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for block in range(k):
            acc += tl.load(dBC_ptr + src + block * LN, mask=mask, other=0.0)
        tl.store(dBC_out_ptr + o, acc.to(dBC_out_ptr.dtype.element_ty), mask=mask)
    else:
        e = (pid - n_bc_programs).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = e < n_part
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for row in range(rows):
            acc += tl.load(part_ptr + row * n_part + e, mask=mask, other=0.0)
        dst = tl.where(e < N * dim, (e % dim) * N + e // dim, e)
        tl.store(part_out_ptr + dst, acc, mask=mask)
