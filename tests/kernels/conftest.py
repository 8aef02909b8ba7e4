"""Kernel tests run the Triton kernels compiled on a GPU, or under the Triton interpreter on the CPU.

TRITON_INTERPRET must be set before triton is first imported, hence here and not in a test module.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
