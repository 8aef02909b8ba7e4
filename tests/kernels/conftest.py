"""Kernel tests run the Triton kernels compiled on a GPU, or under the Triton interpreter on the CPU
(TRITON_INTERPRET is set in tests/conftest.py, before triton is first imported)."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-tensor tests: more threads only add
    synchronisation, which costs seconds per test on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
