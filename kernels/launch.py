"""Launching the Triton kernels with less host work a call than `kernel[grid](...)`.

On every call, Triton's `JITFunction.run` binds and specialises each argument, builds its cache
key, checks the globals the kernel read and only then launches. For kernels of 40-70 arguments
that is most of the host time of a small scan: an eager forward + backward of ours makes seven
launches and cost 1.0-2.1 ms of host time on the lent H100 machines, against 0.4-1.0 ms for
mamba_ssm's two launches from C++ (docs/benchmarks.md, 2026-12-07).

`launch` keys a call by the exact values of its non-tensor arguments, the dtype and 16-byte
alignment of each tensor and its keyword arguments. That is finer than what Triton specialises
on (dtypes, 16-byte alignment, integers equal to 1 or divisible by 16), so a key seen before
stands for the kernel Triton compiled for it, whose launcher `launch` then calls directly. A new
key goes through `kernel[grid]` (which compiles if Triton has not) and is remembered.

`FAST_LAUNCH` off, tensors not on a GPU (the interpreter), or a launch hook set (profilers
such as proton): plain `kernel[grid](...)`. `POINTER_INTS` passes a known key's tensors to the
launcher as their addresses.
"""

import torch
from triton import knobs

try:  # what Triton's CUDA driver calls for the current stream, without its proxy's lookups
    from torch._C import _cuda_getCurrentRawStream as _raw_stream
except ImportError:  # a torch built without CUDA: launch never reaches it (no CUDA tensors)
    def _raw_stream(device):
        return torch.cuda.current_stream(device).cuda_stream

# On (docs/kernel_tuning_notes.md #25: the compiled kernel tests pass with it; the host time of an
# eager forward + backward was 180-390 us less on an H100, 1260-1358 us against 1502-1745 in four
# runs taken in turns, docs/benchmarks.md 2026-12-07 16:45). A kernel's constexpr
# globals are read when it compiles, and a known key skips Triton's check of them: patch a global
# only in a fresh process, or turn this off first.
FAST_LAUNCH = True
# A known key's tensors go to Triton's C launcher as their addresses (ints): for any other object
# the launcher calls its data_ptr() and then cuPointerGetAttribute, a driver call, once per tensor
# argument (about 60 a forward + backward of the scan). The address is what that call returns for
# device memory; the check it also makes (a CPU tensor among CUDA ones) is the public functions'
# input checks' job (checks._same_device). Off: the tensors themselves, as Triton passes them.
# On: the host time of an eager forward + backward 0.86-0.94 of that with it off at 1 x 256 x 16K
# and 0.97-1.00 at 8 x 256 x 4K, five rounds each, call by call in turns in one process (H100,
# kernel_tuning_notes.md #33); the compiled kernel tests pass with it.
POINTER_INTS = True
MAX_KEYS = 256  # keys remembered per kernel; past that its table starts over

# kernel -> {key: (compiled kernel, its trailing keyword arguments in order, _direct(compiled))}
_known: dict = {}


_VALUES = frozenset({int, float, bool, type(None)})  # arguments keyed by value


def addresses(args) -> list:
    """The arguments as Triton's launcher can take them: each int, float, bool or None as itself,
    every other argument (a tensor) as its address."""
    return [a if type(a) in _VALUES else a.data_ptr() for a in args]


def call_key(args, kwargs, addrs=None) -> tuple:
    """What a call's compiled kernel depends on, as a hashable tuple: each int, float, bool or
    None by value, every other argument (a tensor) by its dtype and its address modulo 16; then
    the keyword arguments (constexprs and options such as num_warps) by value. `addrs`: the
    arguments' `addresses`, if the caller has them (each tensor's data_ptr() is then read once a
    launch, for the key and for POINTER_INTS). The test is the type's membership in a set, not
    isinstance(a, torch.Tensor), which costs more over a backward's 70 arguments, at every launch
    (a third more in a one-off timing on the development machine)."""
    addrs = addresses(args) if addrs is None else addrs
    return (tuple([p if type(a) in _VALUES else (a.dtype, p & 15) for a, p in zip(args, addrs)]),
            tuple(kwargs.items()))


def trailing_values(arg_names, n_positional, kwargs, defaults) -> tuple | None:
    """The values of the parameters after the first n_positional, in signature order, from the
    call's keyword arguments or the parameters' defaults; None where a keyword argument names one
    of the first n_positional parameters (the call can't be replayed as args + this tail)."""
    if any(name in kwargs for name in arg_names[:n_positional]):
        return None
    try:
        return tuple(kwargs[name] if name in kwargs else defaults[name]
                     for name in arg_names[n_positional:])
    except KeyError:
        return None


def _hooked(hook) -> bool:
    """Whether a Triton launch hook is set: None or an empty `HookChain` (Triton 3.6's default,
    which is never None) is not."""
    return hook is not None and bool(getattr(hook, "calls", True))


def _direct(compiled):
    """The C launcher of a compiled kernel and its fixed flags, for a kernel that needs no global
    or profiling scratch: CudaLauncher.__call__ then only forwards to it (Triton 3.6), and calling
    it directly skips a Python frame and two closures a launch. None otherwise."""
    run = compiled.run
    needs = (getattr(run, "global_scratch_size", 1), getattr(run, "profile_scratch_size", 1))
    if needs != (0, 0) or not hasattr(run, "launch"):
        return None
    return run.launch, run.launch_cooperative_grid, run.launch_pdl


def launch(kernel, grid, *args, **kwargs):
    """kernel[grid](*args, **kwargs), with Triton's per-call binding skipped for a call whose key
    (`call_key`) an earlier call had. Returns what `kernel[grid]` returns."""
    if not FAST_LAUNCH or not (isinstance(args[0], torch.Tensor) and args[0].is_cuda):
        return kernel[grid](*args, **kwargs)
    if _hooked(knobs.runtime.launch_enter_hook) or _hooked(knobs.runtime.launch_exit_hook):
        return kernel[grid](*args, **kwargs)
    device = torch.cuda.current_device()
    addrs = addresses(args)
    key = (device, call_key(args, kwargs, addrs))
    table = _known.setdefault(kernel, {})
    known = table.get(key)
    if known is None:
        compiled = kernel[grid](*args, **kwargs)
        defaults = {p.name: p.default for p in kernel.params if p.has_default}
        tail = trailing_values(kernel.arg_names, len(args), kwargs, defaults)
        if tail is not None:
            if len(table) >= MAX_KEYS:
                table.clear()
            table[key] = (compiled, tail, _direct(compiled))
        return compiled
    compiled, tail, direct = known
    if POINTER_INTS:
        args = addrs
    g = (*grid, 1, 1)
    stream = _raw_stream(device)
    if direct is None:
        compiled.run(g[0], g[1], g[2], stream, compiled.function, compiled.packed_metadata, None,
                     None, None, *args, *tail)
    else:
        c_launch, cooperative, pdl = direct
        c_launch(g[0], g[1], g[2], stream, compiled.function, cooperative, pdl, None, None,
                 compiled.packed_metadata, None, None, None, *args, *tail)
    return compiled


__all__ = ["FAST_LAUNCH", "POINTER_INTS", "addresses", "call_key", "launch", "trailing_values"]
