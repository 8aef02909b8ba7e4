"""The reference scan, the oracle of every other kernel test, against what can be worked out
independently: one and two steps by hand, the LTI case as a convolution, packed sequences as
separate pieces, groups as explicit channel blocks; and its autograd by finite differences."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from mamba_bio_audio.kernels.selective_scan.naive import selective_scan_ref

f64 = dict(dtype=torch.float64)


pytestmark = pytest.mark.usefixtures("one_thread")


def inputs(batch=2, dim=3, L=5, N=4, groups=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, **f64)  # noqa: E731
    bc = (batch, N, L) if groups == 0 else (batch, groups, N, L)
    return dict(u=r(batch, dim, L), delta=r(batch, dim, L), A=-torch.rand(dim, N, generator=g, **f64),
                B=r(*bc), C=r(*bc), D=r(dim), z=r(batch, dim, L), delta_bias=r(dim),
                initial_state=r(batch, dim, N))


def test_one_and_two_steps_by_hand():
    x = inputs(L=2)
    y, final = selective_scan_ref(**x, delta_softplus=True, return_final_state=True)
    dt = F.softplus(x["delta"] + x["delta_bias"][:, None])  # (b, d, 2)
    B, C = x["B"][:, None], x["C"][:, None]  # (b, 1, N, 2)
    h = x["initial_state"]
    for t in range(2):
        h = torch.exp(dt[..., t, None] * x["A"]) * h + (dt[..., t] * x["u"][..., t])[..., None] * B[..., t]
        want = ((h * C[..., t]).sum(-1) + x["D"] * x["u"][..., t]) * F.silu(x["z"][..., t])
        torch.testing.assert_close(y[..., t], want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, h, rtol=1e-12, atol=1e-12)


def test_lti_case_is_a_causal_convolution():
    """With Δ constant in time and B, C shared by all positions, y = K * u with
    K_k = Σ_n C_n exp(k Δ A_n) Δ B_n, the S4 convolution kernel."""
    batch, dim, L, N = 1, 3, 40, 4
    g = torch.Generator().manual_seed(3)
    u = torch.randn(batch, dim, L, generator=g, **f64)
    dt = torch.rand(dim, generator=g, **f64) * 0.5 + 0.1
    A = -torch.rand(dim, N, generator=g, **f64) - 0.1
    b, c = torch.randn(N, generator=g, **f64), torch.randn(N, generator=g, **f64)
    y = selective_scan_ref(u, dt[None, :, None].expand(batch, dim, L), A,
                           b[None, :, None].expand(batch, N, L), c[None, :, None].expand(batch, N, L))
    k = torch.arange(L, **f64)
    K = (c * torch.exp(k[:, None, None] * dt[:, None] * A) * dt[:, None] * b).sum(-1)  # (L, d)
    want = torch.stack([(K[: t + 1].flip(0).T * u[0, :, : t + 1]).sum(-1) for t in range(L)], -1)
    torch.testing.assert_close(y[0], want, rtol=1e-10, atol=1e-10)


def test_packed_sequences_scan_like_their_pieces():
    x = inputs(batch=1, L=9)
    cuts = [0, 4, 5, 9]  # pieces of 4, 1 and 4 positions
    seq_idx = torch.tensor([[0] * 4 + [1] + [2] * 4])
    y, final = selective_scan_ref(**x, delta_softplus=True, seq_idx=seq_idx, return_final_state=True)
    for i, (a, b) in enumerate(itertools.pairwise(cuts)):
        piece = {k: (v[..., a:b] if k in ("u", "delta", "z", "B", "C") else v) for k, v in x.items()}
        if i > 0:
            piece["initial_state"] = None  # the state restarts from zero
        y_piece, final_piece = selective_scan_ref(**piece, delta_softplus=True, return_final_state=True)
        torch.testing.assert_close(y[..., a:b], y_piece, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, final_piece, rtol=1e-12, atol=1e-12)


def test_groups_are_blocks_of_channels():
    x = inputs(dim=4, groups=2)
    y = selective_scan_ref(**x)
    for grp in range(2):
        ch = slice(2 * grp, 2 * grp + 2)
        part = {k: v[:, grp] if k in ("B", "C") else v for k, v in x.items()}
        part = {k: v[:, ch] if k in ("u", "delta", "z", "initial_state") else v for k, v in part.items()}
        part.update(A=x["A"][ch], D=x["D"][ch], delta_bias=x["delta_bias"][ch])
        torch.testing.assert_close(y[:, ch], selective_scan_ref(**part), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("groups", [0, 2])
def test_gradcheck(groups):
    x = inputs(batch=1, dim=2, L=4, N=3, groups=groups)
    names = list(x)
    seq_idx = torch.tensor([[0, 0, 1, 1]])

    def fn(*args):
        return selective_scan_ref(**dict(zip(names, args)), delta_softplus=True, seq_idx=seq_idx,
                                  return_final_state=True)

    args = [v.requires_grad_() for v in x.values()]
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-8)
