"""Selective scan kernels: Triton (GPU, or CPU under TRITON_INTERPRET=1), a chunked PyTorch CPU
path and a float64-capable reference. Imports nothing else of the project."""

from .selective_scan import selective_scan
from .state_update import selective_state_update

__all__ = ["selective_scan", "selective_state_update"]
