"""Reference single-step update of the selective SSM (recurrent mode), the oracle of the decode kernel."""

import torch
import torch.nn.functional as F


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One step of h = exp(Δ A) h + Δ B x ; y = C h + D x ; y *= silu(z). `state` is updated in place.

    Args:
        state: (batch, dim, N) fp32 (or fp64), updated in place.
        x, dt, z: (batch, dim).  A: (dim, N).  B, C: (batch, N) or (batch, G, N).
        D, dt_bias: (dim,).
    Returns:
        y: (batch, dim) in x's dtype.
    """
    ct = state.dtype
    dim = x.shape[1]
    dt = dt.to(ct)
    if dt_bias is not None:
        dt = dt + dt_bias.to(ct)
    if dt_softplus:
        dt = F.softplus(dt)
    if B.dim() == 3:
        B = B.repeat_interleave(dim // B.shape[1], dim=1)  # (b, d, n)
        C = C.repeat_interleave(dim // C.shape[1], dim=1)
    else:
        B, C = B[:, None, :], C[:, None, :]
    dA = torch.exp(dt[:, :, None] * A.to(ct))
    new = dA * state + (dt * x.to(ct))[:, :, None] * B.to(ct)
    state.copy_(new)
    y = (new * C.to(ct)).sum(-1)
    if D is not None:
        y = y + x.to(ct) * D.to(ct)
    if z is not None:
        y = y * F.silu(z.to(ct))
    return y.to(x.dtype)
