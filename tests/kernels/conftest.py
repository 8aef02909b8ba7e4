"""Kernel tests run the Triton kernels compiled on a GPU, or under the Triton interpreter on the CPU.

TRITON_INTERPRET must be set before triton is first imported, hence here and not in a test module.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-tensor tests: more threads only add
    synchronisation, which costs seconds per test on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
