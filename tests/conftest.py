"""Test-wide setup: without a CUDA GPU, the Triton kernels run under the Triton interpreter.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, in the root
conftest, which pytest loads before any test module.
"""

import os

# as the console script does before torch loads OpenMP (mamba_bio_audio/cli.py): the in-process
# CLI runs of the tests then wait as a user's do, and idle threads do not spin against the
# subprocesses some tests start
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
