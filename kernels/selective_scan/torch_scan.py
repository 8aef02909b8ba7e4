"""The selective scan in PyTorch for the CPU: chunked, vectorised, memory-lean (backend "torch").

The sequence is cut into chunks of T positions. Every loop below runs over the T positions of a
chunk and handles many chunks (and the batch, channels and state) at once, so a scan of length L
costs L / n Python steps for groups of n chunks, plus one short pass over the chunk boundaries:

1. local pass: scan each chunk from a zero state, giving each chunk's end state E_c;
2. boundary pass: H_{c+1} = decay_c * H_c + E_c, with decay_c = exp(A * sum of Δ over chunk c),
   gives the true state at the start of every chunk (H_0 = the initial state);
3. output pass: scan each chunk again, now from H_c, and contract with C on the way.

No quotient of cumulative products is ever formed: every factor is an exp(Δ A) <= 1 (for A <= 0)
applied step by step, exactly as in the plain loop, so nothing overflows or underflows at any L.

Memory: chunks are processed in groups of n, chosen so that one step's (batch, n, N, dim) slab
has about `SLAB_ELEMENTS` elements; the group's inputs are copied into time-major slabs (entry
[t] is position t of every chunk of the group, contiguous) and its outputs written back. The
autograd Function saves the inputs and the chunk-start states H (batch, dim, L / T, N) only.
Backward reruns the chunks: a reverse local pass gives each chunk's outgoing adjoint, a reverse
boundary pass gives the adjoint entering every chunk, and then, group by group, the states of
the group are recomputed from H and a reverse scan turns them into the gradients. The largest
temporary is one group's states, T slabs, so training memory grows as O(batch * dim * L * N / T)
plus a constant, and never holds the (batch, dim, L, N) state. The math is in README.md.

Layout: states are (batch, G, chunks, N, dg) with the channels of a group (dg = dim / G)
innermost, so that the elementwise steps run over long contiguous rows.
"""

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

CHUNK_SIZE = 32
"""Default chunk length T: backward keeps T slabs of states; the boundary pass has L / T steps."""

SLAB_ELEMENTS = 1 << 18
"""Target size of one step's state slab (batch * chunks * N * dim elements) in a group."""

LOG2E = 1.4426950408889634
LOAD_STRIP, STORE_STRIP = 8, 4  # channels per copy into a slab, chunks per copy out of one


class _Scan:
    """One call's shapes and inputs, and the time-major slabs of groups of chunks.

    A slab of a (batch, dim, L) tensor for chunks c0:c1 is (T, batch, G, c1 - c0, dg): entry
    [t, ..., k, :] is position (c0 + k) * T + t. Positions past L are zero (Δ = 0 there, so the
    padding leaves the state unchanged).
    """

    def __init__(self, u, delta, A, B, C, delta_bias, delta_softplus, seq_idx, chunk_size):
        self.ct = torch.float64 if u.dtype == torch.float64 else torch.float32
        self.batch, self.dim, self.length = u.shape
        if B.dim() == 3:
            B, C = B.unsqueeze(1), C.unsqueeze(1)  # (b, 1, N, L)
        self.G, self.N = B.shape[1], B.shape[2]
        self.dg = self.dim // self.G
        self.T = max(1, min(chunk_size, self.length))
        self.nc = -(-self.length // self.T)
        self.per_group = max(1, SLAB_ELEMENTS // (self.batch * self.dim * self.N))
        self.A = A.to(self.ct).reshape(self.G, self.dg, self.N).transpose(1, 2)[:, None]  # (G, 1, N, dg)
        self.A2 = self.A * LOG2E  # exp(Δ A) = exp2(Δ A2), which is faster on CPUs
        self.u, self.delta, self.B, self.C = u, delta, B, C
        self.delta_bias = None if delta_bias is None else delta_bias.to(self.ct).reshape(self.G, 1, self.dg)
        self.delta_softplus = delta_softplus
        self.reset = None
        if seq_idx is not None:  # (b, 1, L): 1 where the state restarts, else 0
            self.reset = torch.zeros(self.batch, 1, self.length, dtype=self.ct, device=u.device)
            self.reset[:, 0, 1:] = (seq_idx[:, 1:] != seq_idx[:, :-1]).to(self.ct)

    def groups(self, first: int = 0, last: int | None = None):
        """(c0, c1) ranges of at most `per_group` chunks covering chunks first:last."""
        last = self.nc if last is None else last
        for c0 in range(first, last, self.per_group):
            yield c0, min(last, c0 + self.per_group)

    def _split(self, c0, c1):
        p0, p1 = c0 * self.T, min(c1 * self.T, self.length)
        full, rest = divmod(p1 - p0, self.T)
        return p0, full, rest

    def load(self, x: torch.Tensor, c0: int, c1: int, groups: int | None = None) -> torch.Tensor:
        """Slab of x (b, rows, L) for chunks c0:c1 -> (T, b, groups, c1 - c0, rows / groups) in
        the compute dtype; groups defaults to G."""
        b, T, G = x.shape[0], self.T, self.G if groups is None else groups
        per = x.shape[1] // G
        p0, full, rest = self._split(c0, c1)
        fill = torch.zeros if rest else torch.empty
        out = fill(T, b, G, c1 - c0, per, dtype=self.ct, device=x.device)
        if full:
            xs = x[..., p0:p0 + full * T].reshape(b, G, per, full, T)
            # Time-contiguous input: copying in strips of channels is several times faster.
            step = LOAD_STRIP if x.stride(-1) == 1 else per
            for k in range(0, per, step):
                out[:, :, :, :full, k:k + step].copy_(xs[:, :, k:k + step].permute(4, 0, 1, 3, 2))
        if rest:
            xs = x[..., p0 + full * T:p0 + full * T + rest].reshape(b, G, per, rest)
            out[:rest, :, :, full].copy_(xs.permute(3, 0, 1, 2))
        return out

    def store(self, out: torch.Tensor, slab: torch.Tensor, c0: int, c1: int) -> None:
        """Write a slab (T, b, G, c1 - c0, per) back into out (b, G * per, L), padding dropped."""
        b, T, G, per = out.shape[0], self.T, self.G, slab.shape[-1]
        p0, full, rest = self._split(c0, c1)
        if full:
            dst = out[..., p0:p0 + full * T].view(b, G, per, full, T)
            step = STORE_STRIP if out.stride(-1) == 1 else full  # as in load
            for k in range(0, full, step):
                e = min(k + step, full)
                dst[:, :, :, k:e].copy_(slab[:, :, :, k:e].permute(1, 2, 4, 3, 0))
        if rest:
            out[..., p0 + full * T:p0 + full * T + rest].view(b, G, per, rest).copy_(
                slab[:rest, :, :, full].permute(1, 2, 3, 0))

    def zero_padding(self, slab: torch.Tensor, c0: int, c1: int) -> None:
        """Set the positions past L of a (T, b, G, n, ...) slab to zero."""
        _, full, rest = self._split(c0, c1)
        if rest:
            slab[rest:, :, :, full] = 0

    def slab(self, c0: int, c1: int, grad: bool = False, need_u: bool = True) -> dict:
        """The group's discretised inputs, time-major.

        Returns a dict with dt, dtu (T, b, G, n, dg); B, C (T, b, G, n, N, 1); keep
        (T, b, 1, n, 1, 1) or None; u unless need_u=False; with grad=True and softplus,
        dsp = dΔ/d(delta + bias).
        """
        g = {}
        dt = self.load(self.delta, c0, c1)
        if self.delta_bias is not None:
            dt += self.delta_bias
        if self.delta_softplus:
            if grad:
                g["dsp"] = torch.sigmoid(dt)
            dt = F.softplus(dt)
        self.zero_padding(dt, c0, c1)  # the bias and softplus made it nonzero
        g["dt"] = dt
        if need_u:
            g["u"] = self.load(self.u, c0, c1)
            g["dtu"] = dt * g["u"]
        g["B"] = self.load(self.B.flatten(1, 2), c0, c1)[..., None]
        g["C"] = self.load(self.C.flatten(1, 2), c0, c1)[..., None]
        g["keep"] = None
        if self.reset is not None:
            g["keep"] = 1 - self.load(self.reset, c0, c1, groups=1)[..., None]
        return g

    def step_decay(self, g: dict, t: int, out: torch.Tensor) -> torch.Tensor:
        """exp(Δ_t A), times the reset mask -> out (b, G, n, N, dg)."""
        torch.mul(g["dt"][t, :, :, :, None], self.A2, out=out).exp2_()
        if g["keep"] is not None:
            out.mul_(g["keep"][t])
        return out

    def chunk_decay(self, dtsum: torch.Tensor, keepall: torch.Tensor | None, c: int) -> torch.Tensor:
        """Product of the step decays over chunk c -> (b, G, N, dg)."""
        decay = torch.exp2(dtsum[:, :, c, None, :] * self.A2[:, 0])
        return decay if keepall is None else decay.mul_(keepall[:, :, c])

    def chunk_sums(self, g: dict, c0: int, dtsum, keepall) -> None:
        """Record the group's per-chunk sums of Δ and products of the reset mask."""
        dtsum[:, :, c0:c0 + g["dt"].shape[3]] = g["dt"].sum(0)
        if keepall is not None:
            keepall[:, :, c0:c0 + g["dt"].shape[3]] = g["keep"].prod(0)

    def new_state(self, n: int, fill=torch.empty) -> torch.Tensor:
        """A (b, G, n, N, dg) state tensor for n chunks."""
        return fill(self.batch, self.G, n, self.N, self.dg, dtype=self.ct, device=self.u.device)

    def chunk_tables(self):
        """Per-chunk Δ sums (b, G, nc, dg) and reset products (b, 1, nc, 1, 1) or None."""
        dtsum = torch.empty(self.batch, self.G, self.nc, self.dg, dtype=self.ct, device=self.u.device)
        keepall = None if self.reset is None else torch.empty(
            self.batch, 1, self.nc, 1, 1, dtype=self.ct, device=self.u.device)
        return dtsum, keepall


def _forward(s: _Scan, initial_state, D, z):
    """Return y = (C·h + D u) * silu(z) (b, d, L) in u's dtype, the chunk-start states
    H (b, G, nc, N, dg) and the final state (b, G, N, dg)."""
    H = s.new_state(s.nc, torch.zeros)
    if initial_state is not None:
        H[:, :, 0] = initial_state.to(s.ct).reshape(s.batch, s.G, s.dg, s.N).transpose(2, 3)
    if s.nc > 1:
        dtsum, keepall = s.chunk_tables()
        for c0, c1 in s.groups(0, s.nc - 1):  # 1. local end states, into H[c + 1]
            g = s.slab(c0, c1)
            h, a = s.new_state(c1 - c0, torch.zeros), s.new_state(c1 - c0)
            for t in range(s.T):
                h.mul_(s.step_decay(g, t, a)).addcmul_(g["dtu"][t, :, :, :, None], g["B"][t])
            H[:, :, c0 + 1:c1 + 1] = h
            s.chunk_sums(g, c0, dtsum, keepall)
        for c in range(1, s.nc):  # 2. boundaries: H[c] = E[c - 1] + decay[c - 1] H[c - 1]
            H[:, :, c].addcmul_(s.chunk_decay(dtsum, keepall, c - 1), H[:, :, c - 1])
    y = torch.empty(s.batch, s.dim, s.length, dtype=s.u.dtype, device=s.u.device)
    for c0, c1 in s.groups():  # 3. outputs
        g = s.slab(c0, c1)
        h, a, tmp = H[:, :, c0:c1].clone(), s.new_state(c1 - c0), s.new_state(c1 - c0)
        y_g = torch.empty_like(g["dt"])
        for t in range(s.T):
            h.mul_(s.step_decay(g, t, a)).addcmul_(g["dtu"][t, :, :, :, None], g["B"][t])
            torch.sum(torch.mul(h, g["C"][t], out=tmp), dim=-2, out=y_g[t])
        if D is not None:
            y_g.addcmul_(g["u"], D.to(s.ct).reshape(s.G, 1, s.dg))
        if z is not None:
            y_g.mul_(F.silu(s.load(z, c0, c1)))
        s.store(y, y_g, c0, c1)
    return y, H, h[:, :, -1]


def _incoming_adjoints(s: _Scan, dy_of, dfinal: torch.Tensor | None) -> torch.Tensor:
    """The adjoint of the state at the end of each chunk, coming from its right (b, G, nc, N, dg).

    `dy_of(c0, c1)` gives the slab of the gradient of C·h for chunks c0:c1.
    """
    Lam = s.new_state(s.nc, torch.zeros)
    if dfinal is not None:
        Lam[:, :, -1] = dfinal.to(s.ct).reshape(s.batch, s.G, s.dg, s.N).transpose(2, 3)
    if s.nc > 1:
        dtsum, keepall = s.chunk_tables()
        for c0, c1 in s.groups(1, s.nc):  # reverse local pass: what chunk c sends to chunk c - 1
            g, (dy, _, _) = s.slab(c0, c1, need_u=False), dy_of(c0, c1)
            lam, a = s.new_state(c1 - c0, torch.zeros), s.new_state(c1 - c0)
            for t in reversed(range(s.T)):
                lam.addcmul_(g["C"][t], dy[t, :, :, :, None]).mul_(s.step_decay(g, t, a))
            Lam[:, :, c0 - 1:c1 - 1] = lam
            s.chunk_sums(g, c0, dtsum, keepall)
        for c in range(s.nc - 1, 0, -1):  # reverse boundary pass
            Lam[:, :, c - 1].addcmul_(s.chunk_decay(dtsum, keepall, c), Lam[:, :, c])
    return Lam


class SelectiveScanFn(torch.autograd.Function):
    """Chunked selective scan with recomputation in backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus,
                chunk_size):
        ctx.set_materialize_grads(False)
        s = _Scan(u, delta, A, B, C, delta_bias, delta_softplus, seq_idx, chunk_size)
        y, H, final = _forward(s, initial_state, D, z)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, seq_idx, H)
        ctx.delta_softplus, ctx.chunk_size = delta_softplus, chunk_size
        ctx.initial_dtype = initial_state.dtype if initial_state is not None else None
        final = final.transpose(2, 3).reshape(s.batch, s.dim, s.N).contiguous()
        return y, final

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dfinal):
        u, delta, A, B, C, D, z, delta_bias, seq_idx, H = ctx.saved_tensors
        s = _Scan(u, delta, A, B, C, delta_bias, ctx.delta_softplus, seq_idx, ctx.chunk_size)
        ct, T, G, N, dg = s.ct, s.T, s.G, s.N, s.dg
        dev = u.device
        need_dz = z is not None and ctx.needs_input_grad[6]
        Dg = None if D is None else D.to(ct).reshape(G, 1, dg)

        def dy_of(c0, c1):
            """Slabs of the gradient of C·h + D u for chunks c0:c1 and of dout and z (or None)."""
            if dout is None:
                zeros = torch.zeros(T, s.batch, G, c1 - c0, dg, dtype=ct, device=dev)
                return zeros, zeros, None if z is None else s.load(z, c0, c1)
            dout_g = s.load(dout, c0, c1)
            if z is None:
                return dout_g, dout_g, None
            z_g = s.load(z, c0, c1)
            return dout_g * F.silu(z_g), dout_g, z_g

        Lam = _incoming_adjoints(s, dy_of, dfinal)
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)  # the inputs' memory layouts
        dz = torch.empty_like(z) if need_dz else None
        dB = torch.empty(s.batch, G * N, s.length, dtype=ct, device=dev)
        dC = torch.empty_like(dB)
        dA = torch.zeros(G, N, dg, dtype=ct, device=dev)
        dD = torch.zeros(G, dg, dtype=ct, device=dev) if D is not None else None
        dbias = torch.zeros(G, dg, dtype=ct, device=dev) if delta_bias is not None else None
        dinit = None
        for c0, c1 in s.groups():
            g, (dy, dout_g, z_g), n = s.slab(c0, c1, grad=True), dy_of(c0, c1), c1 - c0
            h0 = H[:, :, c0:c1]  # (b, G, n, N, dg): the state before each chunk
            hs = torch.empty((T,) + h0.shape, dtype=ct, device=dev)  # the state after each step
            a, tmp, dAg = s.new_state(n), s.new_state(n), s.new_state(n, torch.zeros)
            ddt_g, ddtu_g = torch.empty_like(g["dt"]), torch.empty_like(g["dt"])
            dB_g = torch.empty(T, s.batch, G, n, N, dtype=ct, device=dev)
            dC_g = torch.empty_like(dB_g)
            y_g = torch.empty_like(g["dt"]) if need_dz else None
            prev = h0
            for t in range(T):
                prev = torch.mul(s.step_decay(g, t, a), prev, out=hs[t])
                prev.addcmul_(g["dtu"][t, :, :, :, None], g["B"][t])
                torch.sum(torch.mul(prev, dy[t, :, :, :, None], out=tmp), dim=-1, out=dC_g[t])
                if need_dz:
                    torch.sum(torch.mul(prev, g["C"][t], out=tmp), dim=-2, out=y_g[t])
            lam = Lam[:, :, c0:c1].clone()  # adjoint of the state, from the chunk's end backwards
            for t in reversed(range(T)):
                lam.addcmul_(g["C"][t], dy[t, :, :, :, None])  # adjoint of h_t
                torch.sum(torch.mul(lam, g["B"][t], out=tmp), dim=-2, out=ddtu_g[t])
                torch.sum(torch.mul(lam, g["dtu"][t, :, :, :, None], out=tmp), dim=-1, out=dB_g[t])
                lam.mul_(s.step_decay(g, t, a))  # adjoint of h_{t-1}
                w = torch.mul(lam, hs[t - 1] if t > 0 else h0, out=tmp)  # λ_t exp(Δ_t A) h_{t-1}
                dAg.addcmul_(w, g["dt"][t, :, :, :, None])
                torch.sum(w.mul_(s.A), dim=-2, out=ddt_g[t])
            del hs
            if c0 == 0:
                dinit = lam[:, :, 0].clone()
            dA += dAg.sum((0, 2))
            s.store(dB, dB_g, c0, c1)
            s.store(dC, dC_g, c0, c1)
            ddt_g.addcmul_(ddtu_g, g["u"])  # Δ u
            du_g = ddtu_g.mul_(g["dt"])
            if D is not None:
                du_g.addcmul_(dy, Dg)
                dD += (dy * g["u"]).sum((0, 1, 3))
            if need_dz:
                if D is not None:
                    y_g.addcmul_(g["u"], Dg)
                sz = torch.sigmoid(z_g)
                dz_g = y_g.mul_(dout_g).mul_(sz).mul_(z_g.mul_(1 - sz).add_(1))
                s.store(dz, dz_g, c0, c1)  # dout * y * silu'(z), silu'(z) = σ(z)(1 + z(1 - σ(z)))
            if ctx.delta_softplus:
                ddt_g.mul_(g["dsp"])
            if delta_bias is not None:
                s.zero_padding(ddt_g, c0, c1)
                dbias += ddt_g.sum((0, 1, 3))
            s.store(du, du_g, c0, c1)
            s.store(ddelta, ddt_g, c0, c1)
        ddelta_bias = dbias.reshape(s.dim).to(delta_bias.dtype) if delta_bias is not None else None
        dB, dC = dB.view(s.batch, G, N, s.length), dC.view(s.batch, G, N, s.length)
        if B.dim() == 3:
            dB, dC = dB.squeeze(1), dC.squeeze(1)
        if ctx.initial_dtype is not None:
            dinit = dinit.transpose(2, 3).reshape(s.batch, s.dim, N).to(ctx.initial_dtype)
        else:
            dinit = None
        dA = dA.transpose(1, 2).reshape(s.dim, N).to(A.dtype)
        dD = dD.reshape(s.dim).to(D.dtype) if D is not None else None
        return (du, ddelta, dA, dB.to(B.dtype), dC.to(C.dtype), dD, dz, ddelta_bias, dinit,
                None, None, None)


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
        chunk_size: chunk length T; backward keeps T state slabs, the boundary pass has L / T steps.
    Returns:
        y (batch, dim, L) in u's dtype, and the final state (batch, dim, N) (float32, or float64
        for float64 inputs) if asked. The final state is differentiable.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    y, final = SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx,
                                     delta_softplus, int(chunk_size))
    return (y, final) if return_final_state else y
