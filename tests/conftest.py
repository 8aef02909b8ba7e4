"""Test-wide setup: without a CUDA GPU, the Triton kernels run under the Triton interpreter.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, in the root
conftest, which pytest loads before any test module.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist (`-n`), every worker would start as many intra-op threads as the machine
# has cores; the float64 reference loops of many tiny ops then spin against each other (on a
# 16-core GPU machine with 8 workers, one 2,000-step reference took 94 s). One thread a worker.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
