"""A whole training step captured once in a CUDA graph and replayed (`train.cuda_graph`).

Eagerly, every kernel of a step is launched by the host: at the small widths of this project's
models (dna-small, the audio U-Net) that host work, not the GPU, sets the speed
(docs/kernel_tuning_notes.md, #12). `GraphedStep` records the step's kernels once and replays
them with one launch, as PyTorch's "whole-network capture" does:

- the inputs are static buffers: each call copies its batches into them, and a batch of
  another shape (a `seq_len_stages` change) captures the step again;
- before a capture the step runs a few times on a side stream (Triton compilation, AdamW's lazy
  state, cuBLAS workspaces), and then the weights, the optimizer state and the CUDA RNG are put
  back as they were (`undone`), so the warm-up leaves no trace in the run;
- running out of GPU memory while capturing, or a step that cannot be captured, raises
  `CaptureFailed` with the graph's memory given back (the trainer then trains eagerly or stops);
- gradients are None when the capture starts, so every replay writes them afresh;
- the optimizer must be capturable with its learning rate a device tensor (optim.set_capturable)
  that the scheduler overwrites in place between replays.

What the step returns (tensors, e.g. the loss) lives in the graph's memory and is overwritten by
the next replay. `bench gpu --graph` times its whole-model rows with this same class.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch.utils._pytree import tree_flatten, tree_map


class CaptureFailed(RuntimeError):
    """The step could not be captured (it waits on the GPU, e.g. `.item()` or a boolean mask)."""


def _signature(spec, leaves):
    """The structure of a flattened batch and the (shape, dtype, device) of its tensors."""
    return spec, [(tuple(t.shape), t.dtype, t.device) if torch.is_tensor(t) else t for t in leaves]


class GraphedStep:
    """`step_fn(inputs)` captured in a CUDA graph; calling the object runs it on new inputs.

    Args:
        step_fn: the whole step on `inputs` (a nested structure of tensors): forward, backward,
            optimizer step. It returns what the caller reads afterwards (tensors, or anything
            the capture's run computed on the host, such as token counts: kept as they were).
        model: the module whose parameters the step trains.
        optimizer: its optimizer, capturable (see optim.set_capturable).
        warmup: eager runs of the step before each capture (their effects are undone).
    """

    def __init__(self, step_fn: Callable, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, warmup: int = 2):
        self.step_fn, self.model, self.optimizer, self.warmup = step_fn, model, optimizer, warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.signature = None
        self.static = self.static_leaves = None
        self.outputs = None
        self.captures = 0

    def __call__(self, inputs):
        """Run the step on `inputs` (copied into the static buffers); returns step_fn's outputs."""
        leaves, spec = tree_flatten(inputs)
        signature = _signature(spec, leaves)
        if self.graph is None or signature != self.signature:
            self._capture(inputs, signature)
        else:
            for static, new in zip(self.static_leaves, leaves):
                if torch.is_tensor(static):
                    static.copy_(new, non_blocking=True)
        self.graph.replay()
        return self.outputs

    def _capture(self, inputs, signature) -> None:
        self._release()
        device = next(self.model.parameters()).device
        # the buffers later batches are copied into: their own memory (the caller's batch, if
        # already on the device, may be reused by the caller)
        self.static = tree_map(lambda t: t.to(device, copy=True) if torch.is_tensor(t) else t,
                               inputs)
        self.static_leaves = tree_flatten(self.static)[0]
        side = torch.cuda.Stream(device)
        try:
            with undone(self.model, self.optimizer):  # waits for the side stream before undoing
                side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side):
                    for _ in range(self.warmup):
                        self.step_fn(self.static)
                        self.optimizer.zero_grad(set_to_none=True)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.outputs = self.step_fn(self.static)
        except torch.cuda.OutOfMemoryError as err:  # the eager step may still fit
            self._release()
            torch.cuda.empty_cache()
            raise CaptureFailed("out of GPU memory while capturing the training step in a CUDA "
                                f"graph ({str(err).splitlines()[0]})") from err
        except RuntimeError as err:
            if self.graph is None:
                raise  # the eager warm-up failed: an error of the step itself
            self._release()
            raise CaptureFailed("the training step could not be captured in a CUDA graph ("
                                f"{str(err).splitlines()[0]})") from err
        self.signature = signature
        self.captures += 1

    def _release(self) -> None:
        """Drop the old graph and the gradients that live in its memory (before a recapture)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = self.outputs = self.static = self.static_leaves = None


def _state_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list:
    """Parameters, buffers, then the optimizer's state tensors (made lazily: they come last, in
    the order the optimizer made them)."""
    tensors = [*model.parameters(), *model.buffers()]
    for state in optimizer.state.values():
        tensors += [v for v in state.values() if torch.is_tensor(v)]
    return tensors


@contextmanager
def undone(model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """Run the block (e.g. warm-up steps), then put back the weights, buffers, optimizer state and
    RNG as they were before it, also when it raises; optimizer state that the block made is
    zeroed, which is the state a fresh AdamW starts from. The copies are kept on the CPU, so the
    GPU never holds a second set of weights and moments."""
    saved = _state_tensors(model, optimizer)
    kept = [t.detach().to("cpu", copy=True) for t in saved]
    device = saved[0].device if saved else torch.device("cpu")
    cuda = device.type == "cuda"
    rng = torch.cuda.get_rng_state(device) if cuda else torch.get_rng_state()
    try:
        yield
    finally:
        if cuda:
            torch.cuda.synchronize(device)  # the block's kernels, on any stream, are done
        with torch.no_grad():
            for t, k in zip(saved, kept):
                t.copy_(k)
            for t in _state_tensors(model, optimizer)[len(saved):]:
                t.zero_()
        if cuda:
            torch.cuda.set_rng_state(rng, device)
        else:
            torch.set_rng_state(rng)
