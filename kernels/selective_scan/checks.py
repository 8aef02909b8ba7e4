"""Input validation for the selective scan and the decode step.

Every check raises a TypeError (not a tensor, wrong dtype) or a ValueError (wrong shape, device or
content) whose message names the argument, what it got and what was expected, so that a caller
never has to read a kernel to find out what went wrong.
"""

import torch

MAX_STATE = 256
"""The largest state size N that the kernels support (the Triton kernel keeps N in registers)."""

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_FLOAT_NAMES = "float16, bfloat16, float32 or float64"


def can_read_values(t: torch.Tensor) -> bool:
    """Whether a check may read `t`'s values back to the host: not while a CUDA graph is being
    captured (a captured training step cannot wait on the GPU; cuda_graph.py in the trainer runs
    the step eagerly first, where the checks see its first batch)."""
    return not (t.is_cuda and torch.cuda.is_current_stream_capturing())


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def _tensor(name: str, t, ndim: int | tuple[int, ...], floating: bool = True) -> None:
    """Check that `t` is a tensor with `ndim` dimensions and, if `floating`, a float dtype."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if t.dim() not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {want}, got shape {_shape(t)}")
    if floating and t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype ({_FLOAT_NAMES}), got {t.dtype}")


def _expect_shape(name: str, t: torch.Tensor, expected: tuple[int, ...], meaning: str) -> None:
    if tuple(t.shape) != expected:
        raise ValueError(f"{name} must have shape {meaning} = {tuple(expected)}, got {_shape(t)}")


def _same_device(named: dict) -> None:
    devices = {name: t.device for name, t in named.items() if t is not None}
    first_name, first = next(iter(devices.items()))
    for name, device in devices.items():
        if device != first:
            raise ValueError(
                f"all tensors must be on one device: {first_name} is on {first}, {name} is on {device}"
            )


def _groups(name: str, M: torch.Tensor, batch: int, dim: int, N: int, length: int | None) -> int:
    """Check B or C against (batch, N, L) / (batch, G, N, L); return G."""
    if M.dim() == 3 and length is not None:
        _expect_shape(name, M, (batch, N, length), "(batch, N, L)")
        return 1
    if M.dim() == 2:
        _expect_shape(name, M, (batch, N), "(batch, N)")
        return 1
    groups = M.shape[1]
    if groups < 1 or dim % groups != 0:
        raise ValueError(
            f"{name} has G={groups} groups (dimension 1 of {_shape(M)}), which must divide dim={dim}"
        )
    if length is None:
        _expect_shape(name, M, (batch, groups, N), "(batch, G, N)")
    else:
        _expect_shape(name, M, (batch, groups, N, length), "(batch, G, N, L)")
    return groups


def check_scan_inputs(u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None,
                      seq_idx=None) -> None:
    """Validate the arguments of `selective_scan`; raise TypeError/ValueError on the first problem.

    Args:
        u, delta, z: (batch, dim, L).  A: (dim, N).  B, C: (batch, N, L) or (batch, G, N, L) with G
            dividing dim; C must have B's shape.  D, delta_bias: (dim,).
        initial_state: (batch, dim, N).  seq_idx: (batch, L) integer, non-decreasing along L.
    """
    _tensor("u", u, 3)
    batch, dim, length = u.shape
    if length < 1 or dim < 1 or batch < 1:
        raise ValueError(f"u must have shape (batch, dim, L) with every size >= 1, got {_shape(u)}")
    _tensor("delta", delta, 3)
    _expect_shape("delta", delta, (batch, dim, length), "(batch, dim, L) like u")
    _tensor("A", A, 2)
    if A.shape[0] != dim:
        raise ValueError(f"A must have shape (dim, N) with dim={dim} (from u), got {_shape(A)}")
    N = A.shape[1]
    if not 1 <= N <= MAX_STATE:
        raise ValueError(f"A has state size N={N} (shape {_shape(A)}); supported: 1 to {MAX_STATE}")
    _tensor("B", B, (3, 4))
    _tensor("C", C, (3, 4))
    _groups("B", B, batch, dim, N, length)
    _groups("C", C, batch, dim, N, length)
    if C.shape != B.shape:
        raise ValueError(f"C must have the shape of B {_shape(B)}, got {_shape(C)}")
    if z is not None:
        _tensor("z", z, 3)
        _expect_shape("z", z, (batch, dim, length), "(batch, dim, L) like u")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            _tensor(name, t, 1)
            _expect_shape(name, t, (dim,), "(dim,)")
    if initial_state is not None:
        _tensor("initial_state", initial_state, 3)
        _expect_shape("initial_state", initial_state, (batch, dim, N), "(batch, dim, N)")
    if seq_idx is not None:
        _tensor("seq_idx", seq_idx, 2, floating=False)
        if seq_idx.dtype.is_floating_point or seq_idx.dtype.is_complex or seq_idx.dtype == torch.bool:
            raise TypeError(f"seq_idx must have an integer dtype (int32 or int64), got {seq_idx.dtype}")
        _expect_shape("seq_idx", seq_idx, (batch, length), "(batch, L)")
        if length > 1 and can_read_values(seq_idx):
            steps = seq_idx[:, 1:] < seq_idx[:, :-1]
            if bool(steps.any()):
                row, col = (int(i) for i in steps.nonzero()[0])
                raise ValueError(
                    f"seq_idx must be non-decreasing along L, but seq_idx[{row}, {col + 1}] = "
                    f"{int(seq_idx[row, col + 1])} < seq_idx[{row}, {col}] = {int(seq_idx[row, col])}"
                )
    _same_device({"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z,
                  "delta_bias": delta_bias, "initial_state": initial_state, "seq_idx": seq_idx})


def check_state_update_inputs(state, x, dt, A, B, C, D=None, z=None, dt_bias=None) -> None:
    """Validate the arguments of `selective_state_update`; raise TypeError/ValueError.

    Args:
        state: (batch, dim, N) float32 or float64 (updated in place).  x, dt, z: (batch, dim).
        A: (dim, N).  B, C: (batch, N) or (batch, G, N) with G dividing dim.  D, dt_bias: (dim,).
    """
    _tensor("state", state, 3)
    if state.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"state must be float32 or float64 (it accumulates), got {state.dtype}")
    batch, dim, N = state.shape
    if N > MAX_STATE:
        raise ValueError(f"state has N={N} (shape {_shape(state)}); supported: 1 to {MAX_STATE}")
    for name, t in (("x", x), ("dt", dt), ("z", z)):
        if t is not None:
            _tensor(name, t, 2)
            _expect_shape(name, t, (batch, dim), "(batch, dim) like state")
    _tensor("A", A, 2)
    _expect_shape("A", A, (dim, N), "(dim, N) like state")
    _tensor("B", B, (2, 3))
    _tensor("C", C, (2, 3))
    _groups("B", B, batch, dim, N, None)
    _groups("C", C, batch, dim, N, None)
    for name, t in (("D", D), ("dt_bias", dt_bias)):
        if t is not None:
            _tensor(name, t, 1)
            _expect_shape(name, t, (dim,), "(dim,)")
    _same_device({"state": state, "x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D, "z": z,
                  "dt_bias": dt_bias})
