"""Test-wide setup: without a CUDA GPU, the Triton kernels run under the Triton interpreter.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, in the root
conftest, which pytest loads before any test module.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
