"""The selective scan in PyTorch for the CPU: chunked, vectorised, memory-lean (backend "torch").

The sequence is cut into chunks of T positions. Every loop below runs over the T positions of a
chunk and handles all chunks (and batch, channels, state) at once, so a scan of length L costs a
few times T Python steps whatever L is, plus one short pass over the chunk boundaries:

1. local pass: scan each chunk from a zero state, giving each chunk's end state E_c;
2. boundary pass: H_{c+1} = decay_c * H_c + E_c, with decay_c = exp(A * sum of Δ over chunk c),
   gives the true state at the start of every chunk (H_0 = the initial state);
3. output pass: scan each chunk again, now from H_c, and contract with C on the way.

No quotient of cumulative products is ever formed: every factor is an exp(Δ A) <= 1 (for A <= 0)
applied step by step, exactly as in the plain loop, so nothing overflows or underflows at any L.

The autograd Function saves the inputs and the chunk-start states H (batch, dim, L / T, N) only.
Backward reruns the chunks: a reverse local pass gives each chunk's outgoing adjoint, a reverse
boundary pass gives the adjoint entering every chunk, and then, one group of chunks at a time,
the chunk's states are recomputed from H_c and a reverse scan turns them into the gradients. The
largest temporary is one group's states, bounded by `BACKWARD_BUDGET` elements, so training
memory grows as O(batch * dim * L) and never holds the (batch, dim, L, N) state.
The math is written out in README.md next to this file.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

CHUNK_SIZE = 64
"""Default chunk length T: the Python loops have T steps; the boundary pass has L / T steps."""

BACKWARD_BUDGET = 1 << 22
"""Most elements of the per-group state buffer (T, batch, dim, chunks, N) held in backward."""


@dataclass
class _Chunked:
    """The inputs, discretised and laid out time-major by chunk: entry [t] is position t of
    every chunk, contiguous, so each loop step reads one slab.

    Shapes: T chunk length, nc number of chunks, dim = G * dg (G groups of B/C).
    """

    ct: torch.dtype  # compute dtype: float64 for float64 inputs, float32 otherwise
    length: int  # L, before padding to nc * T
    T: int
    nc: int
    G: int
    dg: int
    N: int
    A: torch.Tensor  # (G, dg, 1, N)
    dt: torch.Tensor  # (b, d, L), after delta_bias and softplus
    dtT: torch.Tensor  # (T, b, G, dg, nc); zero on the padding, so padding leaves the state alone
    dtuT: torch.Tensor  # (T, b, G, dg, nc), Δ * u
    BT: torch.Tensor  # (T, b, G, 1, nc, N)
    CT: torch.Tensor  # (T, b, G, 1, nc, N)
    keepT: torch.Tensor | None  # (T, b, 1, 1, nc, 1): 0 where seq_idx changes (state reset), else 1

    def to_chunks(self, x: torch.Tensor) -> torch.Tensor:
        """(b, d, L) -> (T, b, G, dg, nc), zero-padded."""
        b = x.shape[0]
        x = F.pad(x, (0, self.nc * self.T - self.length))
        return x.view(b, self.G, self.dg, self.nc, self.T).permute(4, 0, 1, 2, 3).contiguous()

    def from_chunks(self, xT: torch.Tensor) -> torch.Tensor:
        """(T, b, G, dg, nc) -> (b, d, L)."""
        b = xT.shape[1]
        return xT.permute(1, 2, 3, 4, 0).reshape(b, self.G * self.dg, -1)[..., : self.length]

    def bc_to_chunks(self, M: torch.Tensor) -> torch.Tensor:
        """B or C (b, G, N, L) -> (T, b, G, 1, nc, N), zero-padded."""
        b = M.shape[0]
        M = F.pad(M.to(self.ct), (0, self.nc * self.T - self.length))
        M = M.view(b, self.G, self.N, self.nc, self.T).permute(4, 0, 1, 3, 2).contiguous()
        return M.unsqueeze(3)

    def bc_from_chunks(self, MT: torch.Tensor) -> torch.Tensor:
        """(T, b, G, nc, N) -> (b, G, N, L)."""
        b = MT.shape[1]
        return MT.permute(1, 2, 4, 3, 0).reshape(b, self.G, self.N, -1)[..., : self.length]

    def step_decay(self, t: int, c0: int, c1: int, out: torch.Tensor) -> torch.Tensor:
        """exp(Δ_t A), times the reset mask, for chunks c0:c1 -> out (b, G, dg, c1 - c0, N)."""
        torch.mul(self.dtT[t, ..., c0:c1, None], self.A, out=out)
        out.exp_()
        if self.keepT is not None:
            out.mul_(self.keepT[t, ..., c0:c1, :])
        return out

    def chunk_decay(self, c0: int, c1: int) -> torch.Tensor:
        """Product of the step decays over whole chunks c0:c1 -> (b, G, dg, c1 - c0, N)."""
        decay = torch.exp(self.dtT[..., c0:c1].sum(0)[..., None] * self.A)
        if self.keepT is not None:
            decay = decay * self.keepT[..., c0:c1, :].prod(0)
        return decay


def _chunk(u, delta, A, B, C, delta_bias, delta_softplus, seq_idx, chunk_size) -> _Chunked:
    ct = torch.float64 if u.dtype == torch.float64 else torch.float32
    batch, dim, length = u.shape
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)  # (b, 1, N, L)
    G, N = B.shape[1], B.shape[2]
    T = max(1, min(chunk_size, length))
    nc = -(-length // T)
    dt = delta.to(ct)
    if delta_bias is not None:
        dt = dt + delta_bias.to(ct)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    p = _Chunked(ct=ct, length=length, T=T, nc=nc, G=G, dg=dim // G, N=N,
                 A=A.to(ct).view(G, dim // G, 1, N), dt=dt, dtT=None, dtuT=None, BT=None,
                 CT=None, keepT=None)
    p.dtT = p.to_chunks(dt)
    p.dtuT = p.to_chunks(dt * u.to(ct))
    p.BT = p.bc_to_chunks(B)
    p.CT = p.bc_to_chunks(C)
    if seq_idx is not None:
        keep = torch.ones(batch, nc * T, dtype=ct, device=u.device)
        keep[:, 1:length] = (seq_idx[:, 1:] == seq_idx[:, :-1]).to(ct)
        p.keepT = keep.view(batch, nc, T).permute(2, 0, 1).contiguous()[:, :, None, None, :, None]
    return p


def _local_end_states(p: _Chunked, c0: int, c1: int) -> torch.Tensor:
    """Scan chunks c0:c1 from a zero state; return their end states (b, G, dg, c1 - c0, N)."""
    batch = p.dtT.shape[1]
    h = torch.zeros(batch, p.G, p.dg, c1 - c0, p.N, dtype=p.ct, device=p.dtT.device)
    a = torch.empty_like(h)
    for t in range(p.T):
        h.mul_(p.step_decay(t, c0, c1, a)).addcmul_(p.dtuT[t, ..., c0:c1, None],
                                                    p.BT[t, ..., c0:c1, :])
    return h


def _forward(p: _Chunked, initial_state: torch.Tensor | None):
    """Return the SSM output yT (T, b, G, dg, nc), the chunk-start states H (b, G, dg, nc, N)
    and the final state (b, G, dg, N)."""
    batch = p.dtT.shape[1]
    H = torch.zeros(batch, p.G, p.dg, p.nc, p.N, dtype=p.ct, device=p.dtT.device)
    if initial_state is not None:
        H[:, :, :, 0] = initial_state.to(p.ct).reshape(batch, p.G, p.dg, p.N)
    if p.nc > 1:
        E = _local_end_states(p, 0, p.nc - 1)
        decay = p.chunk_decay(0, p.nc - 1)
        for c in range(1, p.nc):
            torch.addcmul(E[:, :, :, c - 1], decay[:, :, :, c - 1], H[:, :, :, c - 1],
                          out=H[:, :, :, c])
    h = H.clone()
    a = torch.empty_like(h)
    prod = torch.empty_like(h)
    yT = torch.empty(p.T, batch, p.G, p.dg, p.nc, dtype=p.ct, device=h.device)
    for t in range(p.T):
        h.mul_(p.step_decay(t, 0, p.nc, a)).addcmul_(p.dtuT[t, ..., None], p.BT[t])
        torch.sum(torch.mul(h, p.CT[t], out=prod), dim=-1, out=yT[t])
    return yT, H, h[:, :, :, -1]


def _backward(p: _Chunked, H: torch.Tensor, dyT: torch.Tensor, dfinal: torch.Tensor | None,
              need_y: bool):
    """Gradients of the chunked scan.

    Args:
        p: the chunked inputs.  H: chunk-start states (b, G, dg, nc, N).
        dyT: gradient of the SSM output C·h (T, b, G, dg, nc).
        dfinal: gradient of the final state (b, d, N) or None.
        need_y: also return the SSM output yT (for the gradient of the silu(z) gate).
    Returns:
        ddtT, ddtuT (T, b, G, dg, nc); dBT, dCT (T, b, G, nc, N); dA (G, dg, N);
        d initial state (b, G, dg, N); yT (T, b, G, dg, nc) or None.
    """
    batch, dev, ct = p.dtT.shape[1], p.dtT.device, p.ct
    T, nc, G, dg, N = p.T, p.nc, p.G, p.dg, p.N

    # Adjoint entering each chunk from its right, Lam (b, G, dg, nc, N).
    Lam = torch.zeros(batch, G, dg, nc, N, dtype=ct, device=dev)
    if dfinal is not None:
        Lam[:, :, :, -1] = dfinal.to(ct).reshape(batch, G, dg, N)
    if nc > 1:
        mu = torch.zeros(batch, G, dg, nc - 1, N, dtype=ct, device=dev)  # chunks 1..nc-1
        a = torch.empty_like(mu)
        for t in reversed(range(T)):
            mu.addcmul_(p.CT[t, ..., 1:, :], dyT[t, ..., 1:, None]).mul_(p.step_decay(t, 1, nc, a))
        decay = p.chunk_decay(1, nc)
        for c in range(nc - 1, 0, -1):
            torch.addcmul(mu[:, :, :, c - 1], decay[:, :, :, c - 1], Lam[:, :, :, c],
                          out=Lam[:, :, :, c - 1])

    ddtT = torch.empty(T, batch, G, dg, nc, dtype=ct, device=dev)
    ddtuT = torch.empty_like(ddtT)
    dBT = torch.empty(T, batch, G, nc, N, dtype=ct, device=dev)
    dCT = torch.empty_like(dBT)
    dA = torch.zeros(G, dg, N, dtype=ct, device=dev)
    yT = torch.empty_like(ddtT) if need_y else None
    per_group = max(1, BACKWARD_BUDGET // (T * batch * G * dg * N))
    dinit = None
    for c0 in range(0, nc, per_group):
        c1 = min(nc, c0 + per_group)
        h0 = H[:, :, :, c0:c1]  # (b, G, dg, n, N)
        hs = torch.empty((T,) + h0.shape, dtype=ct, device=dev)  # h_t of every position
        a = torch.empty_like(h0)
        h = h0
        for t in range(T):
            h = torch.addcmul(h * p.step_decay(t, c0, c1, a), p.dtuT[t, ..., c0:c1, None],
                              p.BT[t, ..., c0:c1, :], out=hs[t])
        CT, BT, dtuT, dyT_g = (p.CT[..., c0:c1, :], p.BT[..., c0:c1, :], p.dtuT[..., c0:c1],
                               dyT[..., c0:c1])
        dCT[..., c0:c1, :] = (hs * dyT_g[..., None]).sum(3)
        if need_y:
            yT[..., c0:c1] = (hs * CT).sum(-1)
        lam = Lam[:, :, :, c0:c1].clone()
        for t in reversed(range(T)):
            lam.addcmul_(CT[t], dyT_g[t, ..., None])
            ddtuT[t, ..., c0:c1] = (lam * BT[t]).sum(-1)
            dBT[t, ..., c0:c1, :] = (lam * dtuT[t, ..., None]).sum(2)
            p.step_decay(t, c0, c1, a)
            torch.mul(lam * a, hs[t - 1] if t > 0 else h0, out=hs[t])  # w_t; h_t is used up
            lam.mul_(a)
        if c0 == 0:
            dinit = lam[:, :, :, 0]
        ddtT[..., c0:c1] = (hs * p.A).sum(-1)
        dA += torch.einsum("tbgdcn,tbgdc->gdn", hs, p.dtT[..., c0:c1])
    return ddtT, ddtuT, dBT, dCT, dA, dinit, yT


class SelectiveScanFn(torch.autograd.Function):
    """Chunked selective scan with recomputation in backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus,
                chunk_size):
        ctx.set_materialize_grads(False)
        p = _chunk(u, delta, A, B, C, delta_bias, delta_softplus, seq_idx, chunk_size)
        yT, H, final = _forward(p, initial_state)
        y = p.from_chunks(yT)  # (b, d, L)
        if D is not None:
            y = y + u.to(p.ct) * D.to(p.ct)[:, None]
        if z is not None:
            y = y * F.silu(z.to(p.ct))
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, seq_idx, H)
        ctx.delta_softplus, ctx.chunk_size = delta_softplus, chunk_size
        ctx.has_initial_state = initial_state is not None
        ctx.initial_dtype = initial_state.dtype if initial_state is not None else None
        batch, dim, _ = u.shape
        return y.to(u.dtype), final.reshape(batch, dim, p.N)

    @staticmethod
    def backward(ctx, dout, dfinal):
        u, delta, A, B, C, D, z, delta_bias, seq_idx, H = ctx.saved_tensors
        p = _chunk(u, delta, A, B, C, delta_bias, ctx.delta_softplus, seq_idx, ctx.chunk_size)
        ct = p.ct
        u32 = u.to(ct)
        dout = dout.to(ct) if dout is not None else torch.zeros_like(u32)
        dy = dout * F.silu(z.to(ct)) if z is not None else dout  # gradient of C·h + D u
        ddtT, ddtuT, dBT, dCT, dA, dinit, yT = _backward(
            p, H, p.to_chunks(dy), dfinal, need_y=z is not None and ctx.needs_input_grad[6])
        ddtu = p.from_chunks(ddtuT)  # (b, d, L)
        ddt = p.from_chunks(ddtT) + ddtu * u32
        du = ddtu * p.dt
        dD = dz = ddelta_bias = None
        if D is not None:
            du = du + dy * D.to(ct)[:, None]
            dD = (dy * u32).sum((0, 2)).to(D.dtype)
        if yT is not None:
            y = p.from_chunks(yT)
            if D is not None:
                y = y + u32 * D.to(ct)[:, None]
            sz = torch.sigmoid(z.to(ct))
            dz = (dout * y * sz * (1 + z.to(ct) * (1 - sz))).to(z.dtype)
        if ctx.delta_softplus:
            pre = delta.to(ct) + (delta_bias.to(ct)[:, None] if delta_bias is not None else 0)
            ddt = ddt * torch.sigmoid(pre)
        if delta_bias is not None:
            ddelta_bias = ddt.sum((0, 2)).to(delta_bias.dtype)
        dB, dC = p.bc_from_chunks(dBT), p.bc_from_chunks(dCT)
        if B.dim() == 3:
            dB, dC = dB.squeeze(1), dC.squeeze(1)
        batch, dim, _ = u.shape
        dinit = dinit.reshape(batch, dim, p.N).to(ctx.initial_dtype) if ctx.has_initial_state else None
        return (du.to(u.dtype), ddt.to(delta.dtype), dA.reshape(dim, p.N).to(A.dtype),
                dB.to(B.dtype), dC.to(C.dtype), dD, dz, ddelta_bias, dinit, None, None, None)


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         initial_state=None, return_final_state=False, seq_idx=None,
                         chunk_size=CHUNK_SIZE):
    """The selective scan on the CPU (or any device), chunked, with a memory-lean backward.

    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t ;  y_t = (C_t · h_t + D u_t) * silu(z_t),
    with Δ = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias.
    Inputs are not validated here; `selective_scan` does that.

    Args:
        u, delta: (batch, dim, L).  A: (dim, N).  B, C: (batch, N, L) or (batch, G, N, L).
        D, delta_bias: (dim,) or None.  z: (batch, dim, L) or None.
        delta_softplus: apply softplus to delta + delta_bias.
        initial_state: (batch, dim, N) or None (zeros); differentiable.
        return_final_state: also return the state after the last position.
        seq_idx: (batch, L) integer or None; the state restarts from zero wherever it changes.
        chunk_size: chunk length T; the loops take T steps, the boundary pass L / T.
    Returns:
        y (batch, dim, L) in u's dtype, and the final state (batch, dim, N) (float32, or float64
        for float64 inputs) if asked. The final state is differentiable.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    y, final = SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx,
                                     delta_softplus, int(chunk_size))
    return (y, final) if return_final_state else y
