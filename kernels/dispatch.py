"""Backend choice shared by the selective scan and the decode step.

Order of precedence: an explicit `backend` argument; else the environment variable
MAMBA_BIO_AUDIO_SCAN_BACKEND; else "auto", which picks Triton for CUDA tensors and the PyTorch
path elsewhere, and says so once per process in a `SlowPathWarning`.
"""

import importlib
import os
import warnings

import torch

ENV_VAR = "MAMBA_BIO_AUDIO_SCAN_BACKEND"
BACKENDS = ("auto", "triton", "torch", "reference")


class SlowPathWarning(UserWarning):
    """The kernels run on a slower path than the fused Triton kernel (CPU tensors, or no Triton)."""


_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Issue `message` as a SlowPathWarning the first time `key` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, SlowPathWarning, stacklevel=4)


def requested_backend(backend) -> str:
    """Validate `backend` and apply the environment variable when it is "auto"."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "auto":
        forced = os.environ.get(ENV_VAR, "").strip().lower()
        if forced:
            if forced not in BACKENDS:
                raise ValueError(f"environment variable {ENV_VAR}={forced!r} is not a backend; "
                                 f"choose from {', '.join(BACKENDS)}")
            backend = forced
    return backend


def choose_backend(backend, device: torch.device, op: str, fallback: str, triton: "LazyKernel") -> str:
    """Resolve `backend` ("auto" included) for tensors on `device`.

    Args:
        backend: one of BACKENDS.  device: where the inputs live.  op: the function's name, for
        messages.  fallback: the backend "auto" uses without Triton.  triton: the Triton
        implementation (imported only for CUDA tensors).
    Returns:
        "triton", "torch" or "reference".
    """
    backend = requested_backend(backend)
    if backend != "auto":
        return backend
    if device.type == "cuda":
        if triton.available():
            return "triton"
        warn_once(f"{op}:no-triton", f"{op}: Triton is not available, so CUDA tensors run on the "
                  f"slower PyTorch path (backend={fallback!r}); install triton for the fused kernel")
        return fallback
    warn_once(f"{op}:{device.type}", f"{op}: {device.type} tensors run on the PyTorch path "
              f"(backend={fallback!r}), much slower than the fused Triton kernel on a CUDA GPU; "
              f"set {ENV_VAR} to choose a backend")
    return fallback


class LazyKernel:
    """A kernel imported on first use, so that a machine without triton still imports the package.

    Args:
        module: absolute module name, e.g. "mamba_bio_audio.kernels.selective_scan.triton_scan".
        name: the function to take from it.
    """

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name
        self._fn, self._tried = None, False

    def load(self):
        """The function, or None where its module cannot be imported (no triton, say)."""
        if not self._tried:
            self._tried = True
            try:
                self._fn = getattr(importlib.import_module(self.module), self.name)
            except ImportError:
                self._fn = None
        return self._fn

    def available(self) -> bool:
        return self.load() is not None

    def require(self):
        """The function; ImportError with what to install where it cannot be imported."""
        fn = self.load()
        if fn is None:
            raise ImportError(f"backend='triton' needs {self.module}.{self.name}, which needs the "
                              f"triton package (pip install triton) and a CUDA GPU, or "
                              f"TRITON_INTERPRET=1 for CPU tensors")
        return fn
