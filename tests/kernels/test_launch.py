"""kernels/launch.py: the key that stands for a compiled kernel, the replayed arguments, and the
same results with the fast launch on (its direct path runs on a GPU; the interpreter falls back)."""

import pytest
import torch
from mamba_bio_audio.kernels import launch as launch_mod
from mamba_bio_audio.kernels.selective_scan import triton_scan
from mamba_bio_audio.kernels.selective_scan.triton_reduce import _bwd_reduce_kernel
from mamba_bio_audio.kernels.selective_scan.triton_scan import selective_scan_triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_call_key_separates_what_triton_specialises_on():
    x = torch.zeros(64, dtype=torch.bfloat16)
    key = launch_mod.call_key
    base = key((x, 16, 7), dict(BLOCK=8, num_warps=1))
    assert key((torch.ones(64, dtype=torch.bfloat16), 16, 7), dict(BLOCK=8, num_warps=1)) == base
    assert key((x.float(), 16, 7), dict(BLOCK=8, num_warps=1)) != base  # dtype
    assert key((x[1:], 16, 7), dict(BLOCK=8, num_warps=1)) != base  # 2 bytes off 16-byte alignment
    assert key((x, 1, 7), dict(BLOCK=8, num_warps=1)) != base  # an int equal to 1
    assert key((x, 16, 8), dict(BLOCK=8, num_warps=1)) != base  # any other int value
    assert key((x, 16, 7), dict(BLOCK=16, num_warps=1)) != base  # a constexpr
    assert key((x, 16, 7), dict(BLOCK=8, num_warps=2)) != base  # an option
    assert key((x, 16, 7.0, None), dict(BLOCK=8)) == key((x, 16, 7.0, None), dict(BLOCK=8))  # values
    hash(base)


def test_launch_hooks_count_only_when_set(monkeypatch):
    """Triton 3.6's hooks are `HookChain`s, never None: an empty chain is no hook (with the check
    `is not None` the fast launch was never taken: the GPU test below failed in the H100 call of
    2026-12-07 12:27); a chain with a function (a profiler's) is, and sends every launch down
    Triton's own path."""
    from triton import knobs
    hook = knobs.runtime.launch_enter_hook
    assert not launch_mod._hooked(None)
    if hasattr(hook, "calls"):
        monkeypatch.setattr(hook, "calls", [])
        assert not launch_mod._hooked(hook)
        monkeypatch.setattr(hook, "calls", [print])
        assert launch_mod._hooked(hook)
    else:
        assert launch_mod._hooked(print)


def test_trailing_values_follow_the_signature():
    """The reduce kernel's call: 11 positional arguments, then BLOCK by keyword (num_warps is an
    option, not a parameter)."""
    names = _bwd_reduce_kernel.arg_names
    n = names.index("BLOCK")
    assert launch_mod.trailing_values(names, n, dict(BLOCK=512, num_warps=4), {}) == (512,)
    assert launch_mod.trailing_values(names, n - 1, dict(BLOCK=512), {}) is None  # one missing
    assert launch_mod.trailing_values(names, n - 1, dict(BLOCK=512), {names[n - 1]: 3}) == (3, 512)
    assert launch_mod.trailing_values(names, n, dict(BLOCK=512, **{names[0]: 1}), {}) is None


@pytest.mark.parametrize("fast, ints", [(False, False), (True, False), (True, True)])
def test_scan_gives_the_same_bits_with_the_fast_launch(monkeypatch, fast, ints):
    """Three calls (the second and third replay the first's launches where the GPU runs the direct
    path, with the tensors passed as themselves or as their addresses, POINTER_INTS), forward and
    backward, against the plain launch: the same bits."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).to(DEVICE)
    u, z, B, C = r(1, 4, 40), r(1, 4, 40), r(1, 4, 40), r(1, 4, 40)
    delta = (0.1 + torch.rand(1, 4, 40, generator=g)).to(DEVICE)
    A, D, bias = -torch.rand(4, 4, generator=g).to(DEVICE) - 0.5, r(4), r(4)
    B, C = B[:, :4], C[:, :4]

    def run():
        leaves = [t.clone().requires_grad_() for t in (u, delta, A, B, C, D, z, bias)]
        y = selective_scan_triton(*leaves[:6], z=leaves[6], delta_bias=leaves[7],
                                  delta_softplus=True, chunk_size=8, segments=2)
        y.backward(torch.ones_like(y))
        return [y.detach()] + [t.grad for t in leaves]

    monkeypatch.setattr(launch_mod, "FAST_LAUNCH", False)
    want = run()
    monkeypatch.setattr(launch_mod, "FAST_LAUNCH", fast)
    monkeypatch.setattr(launch_mod, "POINTER_INTS", ints)
    for _ in range(3):
        got = run()
        for a, b in zip(got, want):
            assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_fast_launch_replays_known_calls(monkeypatch):
    """On a GPU the second call of a shape takes the direct path (every kernel of a segmented
    forward has a known key by then) and gives the plain launch's bits."""
    x = torch.randn(1, 64, 4096, device="cuda", dtype=torch.bfloat16)
    A = -torch.rand(64, 16, device="cuda") - 0.5
    Bm = torch.randn(1, 16, 4096, device="cuda", dtype=torch.bfloat16)
    assert triton_scan.plan(1, 64, 4096, 16, 1, x.device).n_seg > 1  # three kernels a forward

    def scan():
        return selective_scan_triton(x, x.abs() * 0.1, A, Bm, Bm, delta_softplus=True)
    want = scan()
    monkeypatch.setattr(launch_mod, "FAST_LAUNCH", True)
    monkeypatch.setattr(launch_mod, "_known", {})
    for _ in range(2):
        assert torch.equal(scan(), want)
    assert len(launch_mod._known) == 3 and all(len(t) == 1 for t in launch_mod._known.values())
    # none of the scan's kernels needs scratch: each replay calls the C launcher directly
    assert all(direct is not None for t in launch_mod._known.values() for _, _, direct in t.values())


def test_every_launch_of_the_scan_and_the_decode_step_can_be_replayed(monkeypatch):
    """Each launch site passes its parameters positionally up to its first keyword constexpr,
    so that the fast launch can replay it as args + a fixed tail (`trailing_values`): recorded
    from a segmented forward + backward of each variant (seq_idx, an initial state) and a decode
    step."""
    from mamba_bio_audio.kernels.state_update import triton_update
    from mamba_bio_audio.kernels.state_update.triton_update import selective_state_update_triton
    calls = []

    def record(kernel, grid, *args, **kwargs):
        calls.append((kernel, len(args), kwargs))
        return kernel[grid](*args, **kwargs)
    monkeypatch.setattr(triton_scan, "launch", record)
    monkeypatch.setattr(triton_update, "launch", record)
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g).to(DEVICE)  # noqa: E731
    u, delta, z = r(1, 4, 24), (0.1 + torch.rand(1, 4, 24, generator=g)).to(DEVICE), r(1, 4, 24)
    A, B, C, D = -torch.rand(4, 4, generator=g).to(DEVICE) - 0.5, r(1, 4, 24), r(1, 4, 24), r(4)
    seq_idx = torch.tensor([[0] * 10 + [1] * 14], dtype=torch.int32).to(DEVICE)
    for variant in triton_scan.VARIANTS:
        leaves = [t.clone().requires_grad_() for t in (u, delta, A, B, C, D, z)]
        y, final = selective_scan_triton(*leaves[:6], z=leaves[6], delta_softplus=True,
                                         chunk_size=4, segments=3, variant=variant, seq_idx=seq_idx,
                                         initial_state=r(1, 4, 4).requires_grad_(),
                                         return_final_state=True)
        (y.sum() + final.sum()).backward()
    selective_state_update_triton(r(2, 4, 4), r(2, 4), r(2, 4), A, r(2, 4), r(2, 4), D=D, z=r(2, 4))
    kernels = {kernel for kernel, _, _ in calls}
    # the forward of "recurrent" and "tiled" ("chunked" runs the recurrent one), the backward of
    # each variant, segment ends, segment adjoints, carry, reduce, decode
    assert len(kernels) == 10
    for kernel, n_args, kwargs in calls:
        tail = launch_mod.trailing_values(kernel.arg_names, n_args, kwargs, {})
        assert tail is not None and n_args + len(tail) == len(kernel.arg_names), kernel
