"""CPU settings for the selective scan's PyTorch path (`fast_cpu_math`)."""

import numpy as np
import torch


def fast_cpu_math() -> None:
    """Make denormal floats zero in this process. Called by `resolve_device` of the pipelines
    (pipelines/training/device.py) whenever a job runs on the CPU: the training commands resolve
    their device as soon as their config is checked, before any data is read, and the trainer,
    `predict` and `generate` resolve theirs first thing.

    The decays exp(Δ·A) of a scan underflow into denormals, which x86 CPUs handle many times
    slower than normal floats. Measured on 2 cores (species classifier, d_model 48 x 2 layers,
    steps 30-40 of training): 41K tokens/s without, 47K with. Values below 1.2e-38 become 0,
    far below anything a loss can see.

    The setting is per thread, and the OpenMP worker threads copy it when they start, at the first
    multi-threaded torch op: call this before that op. Measured on 2 threads, a 1M-element
    multiply whose products underflow: 0.35 ms when called first, 4 ms when a multi-threaded op
    ran before (the worker thread's half still takes the slow path). The trainer's call alone was
    too late in the log-mel digits pipeline, whose features are computed before training.

    The other CPU setting is the OpenMP wait policy, set by the console script (cli.py: PASSIVE
    unless the user set OMP_WAIT_POLICY): see the README, "Speed on a CPU".
    """
    for dtype in (np.float32, np.float64):
        np.finfo(dtype)  # cached now: computed after the flush, numpy warns "smallest subnormal"
    torch.set_flush_denormal(True)
