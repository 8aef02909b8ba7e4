"""The single-step (recurrent mode) update of the selective SSM, for O(1)-per-token generation.

Backends: "triton" (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1) and "reference" (the
PyTorch step in naive.py, already vectorised: one step has no loop to speed up); "torch" is the
same as "reference" here.
"""

from ..dispatch import LazyKernel, choose_backend
from ..selective_scan.checks import check_state_update_inputs
from .naive import selective_state_update_ref

_TRITON = LazyKernel(f"{__name__}.triton_update", "selective_state_update_triton")


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                           backend="auto"):
    """One step: h = exp(Δ A) h + Δ B x ;  y = (C · h + D x) * silu(z); `state` is updated in place.

    Δ = softplus(dt + dt_bias) if dt_softplus else dt + dt_bias.

    Args:
        state: (batch, dim, N) float32 (or float64), overwritten with the new state.
        x, dt: (batch, dim).  z: (batch, dim) or None.  A: (dim, N).
        B, C: (batch, N) or (batch, G, N) with G dividing dim.  D, dt_bias: (dim,) or None.
        backend: "auto" (Triton for CUDA tensors, else "reference"; the environment variable
            MAMBA_BIO_AUDIO_SCAN_BACKEND overrides "auto"), "triton", "torch" or "reference".
    Returns:
        y: (batch, dim) in x's dtype.
    """
    check_state_update_inputs(state, x, dt, A, B, C, D, z, dt_bias)
    args = (state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    chosen = choose_backend(backend, x.device, "selective_state_update", "reference",
                            _TRITON)
    if chosen == "triton":
        return _TRITON.require()(*args)
    return selective_state_update_ref(*args)


__all__ = ["selective_state_update", "selective_state_update_ref"]
