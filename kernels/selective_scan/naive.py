"""The reference selective scan: the plainest correct loop over time, the oracle of every test.

It runs in the dtype of its inputs when that is float64 (for gradcheck and the tests' oracle),
and in float32 otherwise. Autograd flows through it, so it is also a (slow, memory-hungry)
backward reference.
"""

import torch
import torch.nn.functional as F


def expand_groups(M: torch.Tensor, dim: int) -> torch.Tensor:
    """Broadcast B or C to one row per channel.

    Args:
        M: (batch, N, L) shared by every channel, or (batch, G, N, L) with G groups of dim // G
            channels each.
        dim: number of channels.
    Returns:
        (batch, dim, N, L)
    """
    if M.dim() == 3:
        return M.unsqueeze(1).expand(M.shape[0], dim, M.shape[1], M.shape[2])
    groups = M.shape[1]
    return M.repeat_interleave(dim // groups, dim=1)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       initial_state=None, return_final_state=False, seq_idx=None):
    """h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t ;  y_t = C_t h_t + D u_t ;  y_t *= silu(z_t).

    Args:
        u, delta, z: (batch, dim, L).  A: (dim, N).  B, C: (batch, N, L) or (batch, G, N, L).
        D, delta_bias: (dim,).  initial_state: (batch, dim, N).
        seq_idx: (batch, L) integer; the state restarts from zero wherever it changes.
    Returns:
        y (batch, dim, L) in u's dtype, and the final state (batch, dim, N) if asked.
    """
    dtype_in = u.dtype
    ct = torch.float64 if u.dtype == torch.float64 else torch.float32
    batch, dim, L = u.shape
    u, delta = u.to(ct), delta.to(ct)
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    A = A.to(ct)
    Bx = expand_groups(B.to(ct), dim)  # (b, d, n, l)
    Cx = expand_groups(C.to(ct), dim)  # (b, d, n, l)
    if initial_state is not None:
        h = initial_state.to(ct)
    else:
        h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    # per-step views taken with unbind, whose backward stacks the L slices' gradients once
    # (indexing [..., t] inside the loop would make autograd's backward quadratic in L)
    steps = zip(delta.unbind(-1), u.unbind(-1), Bx.unbind(-1), Cx.unbind(-1))
    for t, (delta_t, u_t, B_t, C_t) in enumerate(steps):
        if seq_idx is not None and t > 0:
            same = (seq_idx[:, t] == seq_idx[:, t - 1]).to(ct)[:, None, None]  # (b, 1, 1)
            h = h * same
        dA = torch.exp(delta_t[:, :, None] * A)  # (b, d, n)
        h = dA * h + (delta_t * u_t)[:, :, None] * B_t
        ys.append((h * C_t).sum(-1))  # (b, d)
    y = torch.stack(ys, dim=-1) if L > 0 else u.new_zeros(batch, dim, 0)
    if D is not None:
        y = y + u * D.to(ct)[None, :, None]
    if z is not None:
        y = y * F.silu(z.to(ct))
    y = y.to(dtype_in)
    if return_final_state:
        return y, h.float() if ct == torch.float32 else h
    return y
