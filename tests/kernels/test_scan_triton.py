"""The Triton selective scan against the float64 reference: output and every gradient.

Runs compiled on a GPU, or under TRITON_INTERPRET=1 on the CPU (see conftest.py), where it is slow:
the CPU cases use tiny widths and small chunks so that short sequences still cross many chunks.
"""

import functools

import pytest
import torch

from mamba_bio_audio.kernels.selective_scan import triton_scan
from mamba_bio_audio.kernels.selective_scan.naive import selective_scan_ref
from mamba_bio_audio.kernels.selective_scan.triton_scan import selective_scan_triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# (rtol, atol) of the output by input dtype (DESIGN.md); gradients get GRAD_FACTOR times more.
TOL = {torch.float32: (6e-4, 2e-3), torch.float16: (3e-3, 5e-3), torch.bfloat16: (3e-2, 5e-2)}
GRAD_FACTOR = 4
KERNEL_OPTIONS = ("chunk_size", "block_d", "deterministic", "variant", "segments", "num_warps",
                  "staged", "sub_chunk", "adjoint_split")
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    """Every buffer the kernels write starts as NaN, so an unwritten element fails the comparison."""
    def nan_empty(*shape, like, dtype=None):
        return torch.full(shape, float("nan"), device=like.device, dtype=dtype or like.dtype)
    monkeypatch.setattr(triton_scan, "_empty", nan_empty)


def make_inputs(batch, dim, L, N, groups=0, dtype=torch.float32, D=True, z=True, bias=True,
                init=False, seed=0):
    """Random scan inputs on DEVICE; groups=0 gives B, C of shape (batch, N, L)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    bc_shape = (batch, N, L) if groups == 0 else (batch, groups, N, L)
    x = {
        "u": r(batch, dim, L).to(dtype),
        "delta": (0.05 + 0.5 * torch.rand(batch, dim, L, generator=g)).to(dtype),  # > 0: stable
        "A": -torch.exp(0.5 * r(dim, N)),
        "B": r(*bc_shape).to(dtype),
        "C": r(*bc_shape).to(dtype),
        "D": r(dim) if D else None,
        "z": r(batch, dim, L).to(dtype) if z else None,
        "delta_bias": 0.2 * torch.rand(dim, generator=g) if bias else None,
        "initial_state": r(batch, dim, N) if init else None,
    }
    return {k: (v.to(DEVICE) if v is not None else None) for k, v in x.items()}


def run(fn, inputs, dy, dfinal, grad=True, **kw):
    """Scan, backpropagate (dy, dfinal) and return y, final state and the gradients by name."""
    leaves = {k: v.detach().clone().requires_grad_(grad) for k, v in inputs.items() if v is not None}
    args = {k: leaves.get(k) for k in inputs}
    y, final = fn(**args, return_final_state=True, **kw)
    if not grad:
        return y, final, {}
    if dfinal is None:
        y.backward(dy)
    else:
        torch.autograd.backward([y, final], [dy, dfinal])
    return y, final, {k: v.grad for k, v in leaves.items()}


def reference(inputs, dy, dfinal, **kw):
    x64 = {k: (v.double().cpu() if v is not None else None) for k, v in inputs.items()}
    seq_idx = kw.pop("seq_idx", None)
    return run(selective_scan_ref, x64, dy.double().cpu(),
               dfinal.double().cpu() if dfinal is not None else None,
               seq_idx=seq_idx.cpu() if seq_idx is not None else None, **kw)


def assert_close(name, got, want, rtol, atol):
    assert got is not None, f"{name}: no gradient"
    assert not torch.isnan(got).any(), f"{name}: NaN (unwritten output?)"
    torch.testing.assert_close(got.double().cpu(), want, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def check_against_reference(inputs, dtype=torch.float32, seq_idx=None, with_dfinal=True, **kw):
    batch, dim, L = inputs["u"].shape
    N = inputs["A"].shape[1]
    g = torch.Generator().manual_seed(1)
    dy = torch.randn(batch, dim, L, generator=g).to(dtype).to(DEVICE)
    dfinal = torch.randn(batch, dim, N, generator=g).to(DEVICE) if with_dfinal else None
    y, final, grads = run(selective_scan_triton, inputs, dy, dfinal, seq_idx=seq_idx, **kw)
    for option in KERNEL_OPTIONS:
        kw.pop(option, None)
    y_ref, final_ref, grads_ref = reference(inputs, dy, dfinal, seq_idx=seq_idx, **kw)
    rtol, atol = TOL[dtype]
    assert y.dtype == dtype and final.dtype == torch.float32
    assert_close("y", y, y_ref, rtol, atol)
    assert_close("final_state", final, final_ref, rtol, atol)
    for name, want in grads_ref.items():
        # gradients summed over batch and length grow with them: compare relative to their scale
        scale = max(1.0, want.abs().max().item()) if name in ("A", "D", "delta_bias") else 1.0
        assert_close(f"grad {name}", grads[name], want, GRAD_FACTOR * rtol, GRAD_FACTOR * atol * scale)


@pytest.mark.parametrize("L", [1, 63, 100])
@pytest.mark.parametrize("options", [
    dict(D=True, z=True, bias=True, softplus=True),
    dict(D=False, z=False, bias=False, softplus=False),
])
def test_matches_reference(L, options):
    options = dict(options)
    softplus = options.pop("softplus")
    inputs = make_inputs(2, 4, L, 4, **options)
    check_against_reference(inputs, delta_softplus=softplus, chunk_size=16)


def channels_last(inputs):
    """The same values with u, delta, z, B and C laid out as the mixer passes them on a GPU: views
    of (batch, L, channels) memory."""
    def view(x):
        return x.transpose(-1, -2).contiguous().transpose(-1, -2) if x is not None and x.dim() >= 3 else x
    return {k: (view(v) if k in ("u", "delta", "z", "B", "C") else v) for k, v in inputs.items()}


@pytest.mark.parametrize("staged", [False, True])
def test_channels_last_inputs_staged_or_read_step_by_step(staged):
    """Both ways the recurrent kernels read a chunk's inputs (the plan stages time-contiguous inputs
    and reads channels-last ones step by step), on channels-last inputs, across segments, a short
    last chunk, an initial state and the final state's gradient."""
    inputs = channels_last(make_inputs(2, 8, 45, 4, init=True))
    assert inputs["u"].stride(1) == 1 and inputs["B"].stride(1) == 1
    check_against_reference(inputs, delta_softplus=True, chunk_size=8, segments=3, block_d=4,
                            staged=staged)


@pytest.mark.parametrize("staged", [False, True])
@pytest.mark.parametrize("sub_chunk", [2, 4])
def test_backward_walks_chunks_in_sub_chunks(staged, sub_chunk):
    """The recurrent backward in sub-chunks (a chunk of 8 steps walked back 2 or 4 steps at a time
    from the states its first rerun kept): across segments, packed sequences (a reset inside a
    sub-chunk and one on a sub-chunk boundary, t = 12), a short last chunk, grouped B/C, an
    initial state and the final state's gradient."""
    L = 45
    seq_idx = torch.tensor([[0] * 12 + [1] * 7 + [2] * 26], dtype=torch.int32).to(DEVICE)
    inputs = channels_last(make_inputs(1, 8, L, 4, groups=2, init=True, seed=12))
    check_against_reference(inputs, seq_idx=seq_idx, delta_softplus=True, chunk_size=8, segments=3,
                            block_d=4, staged=staged, sub_chunk=sub_chunk)


@pytest.mark.parametrize("deterministic", [True, False])
def test_backward_folded_channel_sums(deterministic):
    """dB and dC summed over channels by the folded butterfly (triton_steps._channel_sums; under
    the interpreter its shuffles are gathers along the lane axis): the tile it is written for
    (N 16, BLOCK_D 32, one warp, channels-last), a second channel block half masked (dim 40),
    segments, and both ways of reducing dB, dC (partials, atomics)."""
    plan = triton_scan.plan(1, 40, 37, 16, 1, torch.device(DEVICE), backward=True, block_d=32,
                            chunk=8, segments=2, channels_last=True)
    assert plan.folded_sums == triton_scan.BWD_FOLDED_SUMS
    inputs = channels_last(make_inputs(1, 40, 37, 16, init=True, seed=5))
    check_against_reference(inputs, delta_softplus=True, chunk_size=8, segments=2, block_d=32,
                            deterministic=deterministic)


@pytest.fixture
def walk_unroll(monkeypatch):
    """BWD_WALK_UNROLL 2 (the default) held for one test whatever the module says, with the plan
    cache cleared before and after (plans are cached with the constant's value at the time)."""
    triton_scan._plan.cache_clear()
    monkeypatch.setattr(triton_scan, "BWD_WALK_UNROLL", 2)
    yield 2
    triton_scan._plan.cache_clear()


@pytest.mark.parametrize("sub_chunk", [8, 4])
def test_backward_walk_unrolled(walk_unroll, sub_chunk):
    """BWD_WALK_UNROLL (#34): the plan unrolls the walk back only where the backward's registers
    are not limited and its inputs are not staged; the unrolled kernel (compiled on a GPU; the
    interpreter ignores the unroll) against the float64 reference: chunks and sub-chunks, a short
    last chunk, segments, packed sequences, an initial state and the final state's gradient."""
    dev = torch.device(DEVICE)
    p = triton_scan.plan(1, 8, 45, 4, 1, dev, backward=True, chunk=8, block_d=4, channels_last=True)
    assert p.maxnreg is None and p.walk_unroll == walk_unroll
    assert triton_scan.plan(1, 8, 45, 4, 1, dev, backward=True, chunk=8, block_d=4,
                            channels_last=True, staged=True).walk_unroll == 1
    assert triton_scan.plan(1, 8, 45, 4, 1, dev, chunk=8, block_d=4,
                            channels_last=True).walk_unroll == 1  # forward
    seq_idx = torch.tensor([[0] * 12 + [1] * 7 + [2] * 26], dtype=torch.int32).to(DEVICE)
    inputs = channels_last(make_inputs(1, 8, 45, 4, init=True, seed=6))
    check_against_reference(inputs, seq_idx=seq_idx, delta_softplus=True, chunk_size=8,
                            segments=3, block_d=4, sub_chunk=sub_chunk)


@pytest.mark.parametrize("sub_chunk", [8, 2])
def test_backward_rerun_three_steps_ahead(sub_chunk):
    """The chunk rerun with its loads three steps ahead (triton_steps._rerun_step3, #28): chunks
    and sub-chunks, a short last chunk, segments, packed sequences, an initial state and the final
    state's gradient."""
    seq_idx = torch.tensor([[0] * 12 + [1] * 7 + [2] * 26], dtype=torch.int32).to(DEVICE)
    inputs = channels_last(make_inputs(1, 8, 45, 4, init=True, seed=3))
    check_against_reference(inputs, seq_idx=seq_idx, delta_softplus=True, chunk_size=8,
                            segments=3, block_d=4, sub_chunk=sub_chunk)


def test_long_sequence_many_chunks():
    # the interpreter runs the step-by-step kernels ~10x slower than the tiled ones
    inputs = make_inputs(1, 4, 1000, 4, init=True)
    check_against_reference(inputs, delta_softplus=True, chunk_size=32,
                            variant="tiled" if DEVICE == "cpu" else "recurrent")


@pytest.mark.parametrize("variant", triton_scan.VARIANTS)
def test_segments_along_L_with_resets_at_segment_boundaries(variant):
    """Parallelism along L: segments of 2 chunks (16 steps), packed pieces that start exactly on a
    segment boundary (t = 16, 32), inside one (t = 10, 37) and a last segment cut short; grouped
    B/C, initial state and final-state gradient all cross the segment boundaries."""
    L = 60
    seq_idx = torch.tensor([[0] * 16 + [1] * 16 + [2] * 5 + [3] * 23,
                            [0] * 10 + [1] * 40 + [2] * 10], dtype=torch.int32).to(DEVICE)
    inputs = make_inputs(2, 4, L, 5, groups=2, init=True, seed=7)
    check_against_reference(inputs, seq_idx=seq_idx, delta_softplus=True, chunk_size=8, block_d=2,
                            variant=variant, segments=4)


@pytest.mark.parametrize("variant,split", [("tiled", 3), ("recurrent", 2)])
def test_segment_adjoint_pass_runs_in_sub_segments(variant, split):
    """The backward's segment-adjoint pass cut into `split` sub-segments a segment: 15 chunks in
    segments of 2 x split chunks, so the last segment is short and has fewer sub-segments than
    the others (its exit adjoint is still the final state's gradient); resets on and inside
    boundaries, grouped B/C, initial state."""
    L = 60
    seq_idx = torch.tensor([[0] * 8 + [1] * 16 + [2] * 5 + [3] * 31,
                            [0] * 10 + [1] * 40 + [2] * 10], dtype=torch.int32).to(DEVICE)
    inputs = make_inputs(2, 4, L, 5, groups=2, init=True, seed=12)
    check_against_reference(inputs, seq_idx=seq_idx, delta_softplus=True, chunk_size=4, block_d=2,
                            variant=variant, segments=4, adjoint_split=split)


@pytest.mark.parametrize("variant", triton_scan.VARIANTS)
def test_segments_without_optional_inputs_fast_mode(variant):
    """Segments (5 of 2 chunks) with no D, z, bias, initial state or final-state gradient, atomics."""
    inputs = make_inputs(1, 3, 37, 4, D=False, z=False, bias=False, seed=8)
    check_against_reference(inputs, delta_softplus=False, chunk_size=4, variant=variant, segments=5,
                            with_dfinal=False, deterministic=False)


@pytest.mark.parametrize("L, segments", [(75, 38), (141, 71)])
def test_many_segments_carry_pass_takes_boundaries_in_blocks(L, segments):
    """Segments of one chunk: the boundary pass (forward and reverse) composes its boundaries a
    block at a time: 37 boundaries cross three blocks of CARRY_SHORT's 16, 70 two blocks of
    CARRY_LONG's 64 (2 channels, one of them masked in the second tile), the last block partial
    either way; initial state and final-state gradient flow through every block."""
    assert triton_scan.CARRY_SHORT[0] == 16 and triton_scan.CARRY_LONG[0] == 64
    inputs = make_inputs(1, 3, L, 4, init=True, seed=11)
    check_against_reference(inputs, delta_softplus=True, chunk_size=2, block_d=2, variant="tiled",
                            segments=segments)


def test_segmented_scan_equals_unsegmented_and_is_deterministic():
    inputs = make_inputs(1, 4, 64, 4, init=True, seed=9)
    dy = torch.randn(1, 4, 64, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    kw = dict(delta_softplus=True, chunk_size=8, variant="tiled")
    y1, f1, g1 = run(selective_scan_triton, inputs, dy, None, segments=1, **kw)
    y4, f4, g4 = run(selective_scan_triton, inputs, dy, None, segments=4, **kw)
    y4b, _, g4b = run(selective_scan_triton, inputs, dy, None, segments=4, **kw)
    torch.testing.assert_close(y4, y1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(f4, f1, rtol=1e-5, atol=1e-5)
    assert torch.equal(y4, y4b)
    for name in g1:
        torch.testing.assert_close(g4[name], g1[name], rtol=1e-4, atol=1e-4)
        assert torch.equal(g4[name], g4b[name]), name


def test_plan_adds_segments_only_where_channels_leave_the_gpu_idle(monkeypatch):
    """On a 132-SM GPU: dna-small's d_inner 256 at batch 1 is cut along L until about
    SEGMENT_PROGRAMS_PER_SM programs per SM exist; batch 8 x 2048 already fills it and is not."""
    monkeypatch.setattr(triton_scan, "_sms", lambda device: 132)
    target = triton_scan.SEGMENT_PROGRAMS_PER_SM * 132
    small = triton_scan.plan(1, 256, 1 << 17, 16, 1, torch.device("cuda"))
    assert small.n_seg > 1 and 256 // small.block_d * small.n_seg >= target // 2
    assert small.n_seg * small.chunks_per_seg * small.chunk >= 1 << 17
    assert (small.n_seg - 1) * small.chunks_per_seg * small.chunk < 1 << 17  # no empty segment
    wide = triton_scan.plan(8, 2048, 4096, 16, 1, torch.device("cuda"))
    assert wide.n_seg == 1 and wide.block_d == triton_scan.FWD_BLOCK_D
    short = triton_scan.plan(1, 256, 64, 16, 1, torch.device("cuda"))
    assert short.n_seg == 1  # under MIN_SEGMENT_CHUNKS chunks: nothing to cut
    with pytest.raises(ValueError, match="variant"):
        triton_scan.plan(1, 4, 8, 4, 1, torch.device("cpu"), variant="scan")
    with pytest.raises(ValueError, match="sub_chunk"):
        triton_scan.plan(1, 4, 8, 4, 1, torch.device("cpu"), backward=True, sub_chunk=-2)
    with pytest.raises(ValueError, match="adjoint_split"):
        triton_scan.plan(1, 4, 8, 4, 1, torch.device("cpu"), backward=True, adjoint_split=0)


def test_backward_plan_segments_split_whole_for_the_adjoint_pass(monkeypatch):
    """Where the plan picks the segments, the backward's hold a multiple of ADJOINT_SPLIT chunks
    (the adjoint pass runs them as that many sub-segments); the forward, explicit segments and one
    segment are not split."""
    monkeypatch.setattr(triton_scan, "_sms", lambda device: 132)
    cuda, k = torch.device("cuda"), triton_scan.ADJOINT_SPLIT
    for L in (1 << 14, 1 << 17, 100_000):
        bwd = triton_scan.plan(1, 256, L, 16, 1, cuda, backward=True, channels_last=True)
        assert bwd.n_seg > 1 and bwd.adjoint_split == k and bwd.chunks_per_seg % k == 0, bwd
        assert (bwd.n_seg - 1) * bwd.chunks_per_seg * bwd.chunk < L  # no empty segment
    assert triton_scan.plan(1, 256, 1 << 17, 16, 1, cuda).adjoint_split == 1


def test_backward_register_limit_only_where_more_programs_than_fit_unlimited(monkeypatch):
    """BWD_MAXNREG holds the channels-last backward at BLOCK_D 32 where its plan has more programs
    an SM than fit at its unlimited registers (1 x 256 x 131K, 8 x 2048 x 4K), not at 1 x 256 x 16K
    (1024 programs on 132 SMs) nor for staged (time-contiguous) inputs, nor in the forward."""
    monkeypatch.setattr(triton_scan, "_sms", lambda device: 132)
    cuda, limit = torch.device("cuda"), triton_scan.BWD_MAXNREG
    bwd = functools.partial(triton_scan.plan, N=16, groups=1, device=cuda, backward=True)
    assert bwd(1, 256, 1 << 17, channels_last=True).maxnreg == limit
    assert bwd(8, 2048, 4096, channels_last=True).maxnreg == limit
    assert bwd(1, 256, 1 << 14, channels_last=True).maxnreg is None
    assert bwd(1, 256, 1 << 17, channels_last=False).maxnreg is None
    assert triton_scan.plan(1, 256, 1 << 17, 16, 1, cuda, channels_last=True).maxnreg is None
    assert triton_scan.plan(1, 256, 1 << 17, 16, 1, cuda, backward=True, segments=7).adjoint_split == 1
    assert triton_scan.plan(8, 2048, 4096, 16, 1, cuda, backward=True).adjoint_split == 1


def test_grouped_bc_odd_state_size_and_initial_state():
    """Grouped B/C (G=2), N=5 (padded to 8 inside)."""
    inputs = make_inputs(2, 4, 45, 5, groups=2, init=True)
    check_against_reference(inputs, delta_softplus=True, chunk_size=8, block_d=4)


def test_partial_channel_block_and_no_final_gradient():
    inputs = make_inputs(1, 5, 30, 4, init=True)
    check_against_reference(inputs, delta_softplus=False, chunk_size=8, block_d=4, with_dfinal=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    inputs = make_inputs(1, 4, 40, 4, dtype=dtype, init=True)
    check_against_reference(inputs, dtype=dtype, delta_softplus=True, chunk_size=8)


def test_seq_idx_packing_equals_separate_scans():
    lengths = [7, 20, 1, 12]
    L = sum(lengths)
    inputs = make_inputs(1, 4, L, 4, seed=3)
    seq_idx = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))[None]
    seq_idx = seq_idx.to(torch.int32).to(DEVICE)
    check_against_reference(inputs, seq_idx=seq_idx, delta_softplus=True, chunk_size=8)

    g = torch.Generator().manual_seed(2)
    dy = torch.randn(1, 4, L, generator=g).to(DEVICE)
    y, _, grads = run(selective_scan_triton, inputs, dy, None, seq_idx=seq_idx, delta_softplus=True,
                      chunk_size=8)
    start = 0
    dA = torch.zeros_like(inputs["A"])
    for n in lengths:
        piece = {k: (v[..., start:start + n] if v is not None and v.dim() == 3 else v)
                 for k, v in inputs.items()}
        y_p, _, g_p = run(selective_scan_triton, piece, dy[..., start:start + n], None,
                          delta_softplus=True, chunk_size=8)
        torch.testing.assert_close(y[..., start:start + n], y_p, rtol=1e-5, atol=1e-5)
        for name in ("u", "delta", "B", "C", "z"):
            torch.testing.assert_close(grads[name][..., start:start + n], g_p[name], rtol=1e-4,
                                       atol=1e-4, msg=lambda m: f"grad {name}: {m}")
        dA += g_p["A"]
        start += n
    torch.testing.assert_close(grads["A"], dA, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", ["grouped_init", "packed"])
def test_tiled_variant(case):
    """The "tiled" kernels (associative scan over each chunk) agree with the reference too."""
    if case == "grouped_init":
        inputs = make_inputs(1, 4, 30, 5, groups=2, init=True)
        check_against_reference(inputs, delta_softplus=True, chunk_size=16, block_d=4,
                                variant="tiled")
    else:
        inputs = make_inputs(1, 4, 40, 4, seed=4)
        seq_idx = (torch.arange(40) // 13).to(torch.int32)[None].to(DEVICE)
        check_against_reference(inputs, seq_idx=seq_idx, delta_softplus=True, chunk_size=8,
                                variant="tiled")


@pytest.mark.parametrize("case", ["short", "bare", "channels_last_segments"])
def test_chunked_backward_variant(case):
    """The "chunked" backward (each state's steps scanned at once, dB/dC by folded lane sums)
    against the reference: a single step and a partial last chunk; no D, z, bias or softplus;
    channels-last inputs in segments with an initial state and a block of 4 channels."""
    if case == "short":
        for L in (1, 21):
            check_against_reference(make_inputs(2, 4, L, 4), delta_softplus=True, chunk_size=8,
                                    variant="chunked")
    elif case == "bare":
        inputs = make_inputs(1, 8, 40, 4, D=False, z=False, bias=False, seed=5)
        check_against_reference(inputs, delta_softplus=False, chunk_size=16, variant="chunked")
    else:
        inputs = channels_last(make_inputs(1, 8, 45, 4, init=True, seed=3))
        check_against_reference(inputs, delta_softplus=True, chunk_size=8, variant="chunked",
                                segments=3, block_d=4)


def test_deterministic_mode_is_bitwise_reproducible_and_fast_mode_agrees():
    inputs = make_inputs(1, 4, 30, 4, groups=2)
    dy = torch.randn(1, 4, 30, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    kw = dict(delta_softplus=True, chunk_size=16, block_d=2)
    _, _, g1 = run(selective_scan_triton, inputs, dy, None, deterministic=True, **kw)
    _, _, g2 = run(selective_scan_triton, inputs, dy, None, deterministic=True, **kw)
    _, _, g3 = run(selective_scan_triton, inputs, dy, None, deterministic=False, **kw)
    for name in g1:
        assert torch.equal(g1[name], g2[name]), name
        torch.testing.assert_close(g3[name], g1[name], rtol=1e-5, atol=1e-5)


def test_forward_without_grad_skips_states_and_matches():
    inputs = make_inputs(1, 4, 40, 4, init=True)
    with torch.no_grad():
        y, final = selective_scan_triton(**inputs, return_final_state=True, chunk_size=16)
        y_ref, final_ref = selective_scan_ref(**{k: (v.double().cpu() if v is not None else None)
                                                 for k, v in inputs.items()}, return_final_state=True)
    assert_close("y", y, y_ref, *TOL[torch.float32])
    assert_close("final", final, final_ref, *TOL[torch.float32])


def test_state_size_over_maximum_is_refused():
    inputs = make_inputs(1, 2, 4, triton_scan.MAX_N + 1, D=False, z=False, bias=False)
    with pytest.raises(ValueError, match="N="):
        selective_scan_triton(**inputs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("L", [1, 511, 4096])
def test_gpu_dtypes_and_default_tiles(dtype, L):
    inputs = make_inputs(2, 32, L, 16, dtype=dtype, init=True, seed=L)
    check_against_reference(inputs, dtype=dtype, delta_softplus=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_grouped_packed_fast_mode(dtype):
    L = 1000
    inputs = make_inputs(2, 32, L, 16, groups=4, dtype=dtype, init=True)
    seq_idx = (torch.arange(L) // 350).to(torch.int32)[None].repeat(2, 1).to(DEVICE)
    check_against_reference(inputs, dtype=dtype, seq_idx=seq_idx, delta_softplus=True,
                            deterministic=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("variant", triton_scan.VARIANTS)
def test_gpu_small_width_long_sequence_default_plan_uses_segments(variant):
    """batch 1 x 64 channels leaves the GPU idle, so the default plan cuts L into segments."""
    batch, dim, L = 1, 64, 8192
    assert triton_scan.plan(batch, dim, L, 16, 1, torch.device(DEVICE), variant=variant).n_seg > 1
    inputs = make_inputs(batch, dim, L, 16, dtype=torch.bfloat16, init=True, seed=11)
    check_against_reference(inputs, dtype=torch.bfloat16, delta_softplus=True, variant=variant)
