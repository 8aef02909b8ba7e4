"""The selective scan (Mamba's S6 layer): public function, input checks and backend dispatch.

Backends: "triton" (fused kernel; CUDA tensors, or CPU tensors under TRITON_INTERPRET=1),
"torch" (chunked PyTorch path with a memory-lean backward, for the CPU), "reference" (the plain
loop in naive.py, float64-capable, the oracle of the tests). The math is in README.md.
"""

import torch

from ..dispatch import LazyKernel, choose_backend, requested_backend
from .checks import MAX_STATE, check_scan_inputs
from .naive import selective_scan_ref
from .torch_scan import selective_scan_torch

_TRITON = LazyKernel(f"{__name__}.triton_scan", "selective_scan_triton")


def triton_available() -> bool:
    """Whether the Triton implementation can be imported on this machine."""
    return _TRITON.available()


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_final_state=False, seq_idx=None, backend="auto",
                   deterministic=True):
    """Selective scan: h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t ;  y_t = (C_t · h_t + D u_t) * silu(z_t).

    Δ = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias. Argument names and
    shapes follow mamba_ssm's `selective_scan_fn`.

    Args:
        u, delta: (batch, dim, L), float16/bfloat16/float32/float64.
        A: (dim, N), N <= MAX_STATE; usually negative (A = -exp(A_log)).
        B, C: (batch, N, L) shared by all channels, or (batch, G, N, L) with G groups of dim // G
            channels; C has B's shape.
        D, delta_bias: (dim,) or None.  z: (batch, dim, L) or None (no gate).
        delta_softplus: apply softplus to delta + delta_bias.
        initial_state: (batch, dim, N) or None (zeros); gradients flow into it.
        return_final_state: also return the state after position L - 1 (differentiable).
        seq_idx: (batch, L) int32/int64, non-decreasing; the state restarts from zero wherever it
            changes, so a packed row scans like its pieces scanned one by one.
        backend: "auto" (Triton for CUDA tensors, "torch" elsewhere and for float64 inputs; the
            environment variable MAMBA_BIO_AUDIO_SCAN_BACKEND overrides "auto"), "triton",
            "torch" or "reference".
        deterministic: Triton only. True (the default): the dA, dB, dC reductions run in a fixed
            order, so two runs give the same bits (reproducible training, at a small cost);
            False: faster atomic reductions. The "torch" and "reference" paths are always
            deterministic.
    Returns:
        y (batch, dim, L) in u's dtype; with return_final_state, (y, final state (batch, dim, N)
        float32, float64 for float64 inputs).
    Raises:
        TypeError / ValueError naming the argument for inputs of the wrong type, dtype, shape or
        device; ValueError for an unknown backend.
    """
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_final_state,
            seq_idx)
    if u.dtype == torch.float64 and requested_backend(backend) == "auto":
        backend = "torch"  # the Triton kernel computes in float32; float64 inputs ask for more
    chosen = choose_backend(backend, u.device, "selective_scan", "torch", _TRITON)
    if chosen == "triton":
        return _TRITON.require()(*args, deterministic=deterministic)
    if chosen == "torch":
        return selective_scan_torch(*args)
    return selective_scan_ref(*args)


__all__ = ["MAX_STATE", "selective_scan", "selective_scan_ref", "selective_scan_torch",
           "triton_available"]
