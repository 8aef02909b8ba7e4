"""The Triton decode step: against its reference, and chained over L steps against the full scan."""

import pytest
import torch

from mamba_bio_audio.kernels.selective_scan.naive import selective_scan_ref
from mamba_bio_audio.kernels.state_update import triton_update
from mamba_bio_audio.kernels.state_update.naive import selective_state_update_ref
from mamba_bio_audio.kernels.state_update.triton_update import selective_state_update_triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    monkeypatch.setattr(triton_update, "_empty", lambda *shape, like: torch.full(
        shape, float("nan"), device=like.device, dtype=like.dtype))


def make(batch, dim, L, N, groups, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    bc = (batch, N, L) if groups == 0 else (batch, groups, N, L)
    x = dict(u=r(batch, dim, L), delta=0.5 * r(batch, dim, L), A=-torch.exp(0.5 * r(dim, N)),
             B=r(*bc), C=r(*bc), D=r(dim), z=r(batch, dim, L), delta_bias=0.3 * r(dim),
             initial_state=r(batch, dim, N))
    return {k: v.to(DEVICE) for k, v in x.items()}


@pytest.mark.parametrize("groups, N, dim", [(0, 4, 6), (2, 5, 8)])
def test_chained_steps_equal_full_scan(groups, N, dim):
    L = 12
    x = make(2, dim, L, N, groups)
    y_full, final = selective_scan_ref(**{k: v.double().cpu() for k, v in x.items()},
                                       delta_softplus=True, return_final_state=True)
    state = x["initial_state"].clone()
    state_ref = x["initial_state"].double().cpu().clone()
    for t in range(L):
        step = dict(x=x["u"][..., t], dt=x["delta"][..., t], A=x["A"], B=x["B"][..., t],
                    C=x["C"][..., t], D=x["D"], z=x["z"][..., t], dt_bias=x["delta_bias"],
                    dt_softplus=True)
        y = selective_state_update_triton(state, **step)
        y_ref = selective_state_update_ref(state_ref, **{k: (v.double().cpu() if torch.is_tensor(v)
                                                             else v) for k, v in step.items()})
        assert not torch.isnan(y).any()
        torch.testing.assert_close(y.double().cpu(), y_ref, rtol=6e-4, atol=2e-3)
        torch.testing.assert_close(y.double().cpu(), y_full[..., t], rtol=6e-4, atol=2e-3)
    torch.testing.assert_close(state.double().cpu(), final, rtol=6e-4, atol=2e-3)


def test_optional_inputs_absent_and_strided_state():
    x = make(3, 4, 1, 4, 0, seed=1)
    big = torch.randn(3, 4, 8, device=DEVICE)
    state = big[:, :, ::2]  # non-contiguous view, updated in place
    expect = state.double().cpu().clone()
    args = dict(x=x["u"][..., 0], dt=x["delta"][..., 0].abs(), A=x["A"], B=x["B"][..., 0],
                C=x["C"][..., 0])
    y = selective_state_update_triton(state, **args)
    y_ref = selective_state_update_ref(expect, **{k: v.double().cpu() for k, v in args.items()})
    torch.testing.assert_close(y.double().cpu(), y_ref, rtol=6e-4, atol=2e-3)
    torch.testing.assert_close(big[:, :, ::2].double().cpu(), expect, rtol=6e-4, atol=2e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype, tol", [(torch.float16, (3e-3, 5e-3)), (torch.bfloat16, (3e-2, 5e-2))])
def test_gpu_half_inputs(dtype, tol):
    x = make(64, 1024, 1, 16, 0, seed=2)
    state = x["initial_state"].clone()
    args = dict(x=x["u"][..., 0].to(dtype), dt=x["delta"][..., 0].to(dtype), A=x["A"],
                B=x["B"][..., 0].to(dtype), C=x["C"][..., 0].to(dtype), D=x["D"],
                z=x["z"][..., 0].to(dtype), dt_bias=x["delta_bias"], dt_softplus=True)
    y = selective_state_update_triton(state, **args)
    ref_state = x["initial_state"].double()
    y_ref = selective_state_update_ref(ref_state, **{k: (v.double() if torch.is_tensor(v) else v)
                                                     for k, v in args.items()})
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), y_ref, rtol=tol[0], atol=tol[1])
    torch.testing.assert_close(state.double(), ref_state, rtol=6e-4, atol=2e-3)
