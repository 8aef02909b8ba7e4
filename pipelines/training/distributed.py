"""FSDP for Mamba models too large for one device: shard, train, gather a full checkpoint.

By default the trainer replicates the model on every rank (DistributedDataParallel under
torchrun). When the weights, gradients and AdamW moments (16 bytes per parameter in fp32) do not
fit one GPU, shard them over the ranks with FSDP2 (`torch.distributed.fsdp.fully_shard`):

    model = shard_model(MambaLM(cfg))            # after init_process_group, before the optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=...)
    ... forward / backward / step as usual; every rank feeds its own shard of the data ...
    plain = gathered_model(model)                # all ranks call it; the full model on rank 0
    if plain is not None:
        plain.save_pretrained("ckpt")

The trainer does this with `train.fsdp=true` (`gradient_sync`, `full_optimizer_state`,
`load_full_weights` and `load_full_optimizer_state` are its other pieces). This module also
joins the process group under torchrun (`setup_distributed`), makes the context-parallel groups
(`context_group`) and says which rank logs (`is_main_process`, `log`).

Each Mamba `Block` (mixer + norm, + MLP) is one FSDP unit: its parameters are all-gathered just
before its forward and backward and freed afterwards, so a rank holds one block in full at a time
plus its 1/world share of everything else. The embedding, the final norm and the (tied) LM head
form the root unit. The gradients are reduce-scattered (averaged), so with equal shards the
update equals that of one process on the whole batch; tests/pipelines/test_distributed.py checks
this on the CPU (gloo) against the DDP job.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from mamba_bio_audio.errors import ConfigError
from mamba_bio_audio.modules.context_parallel import new_groups as new_context_groups


def setup_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA).

    Returns (rank, world_size); (0, 1) when not distributed.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """Rank 0, or not distributed (torchrun's RANK counts before the process group exists)."""
    if dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def log(msg: str) -> None:
    """Print a progress message to stderr, on rank 0 only."""
    if is_main_process():
        print(msg, file=sys.stderr, flush=True)


def context_group(size: int, world: int, model: nn.Module, fsdp: bool = False):
    """This rank's context-parallel group for `train.context_parallel=size` > 1 (None for 1);
    ConfigError where it cannot work."""
    if size == 1:
        return None
    if world % size:
        raise ConfigError(f"train.context_parallel={size} needs torchrun with a multiple of "
                          f"{size} processes (--nproc_per_node), got {world}")
    config = getattr(model, "config", None)
    if config is not None and config.backbone == "unet":
        raise ConfigError(f"train.context_parallel={size}: the U-Net pools across slice "
                          f"boundaries; context parallelism needs model.backbone=isotropic")
    if config is not None and config.bidirectional:
        raise ConfigError(f"train.context_parallel={size}: a bidirectional model reads the future "
                          f"of every slice; context parallelism needs model.bidirectional=false")
    if fsdp:
        raise ConfigError(f"train.context_parallel={size} with train.fsdp=true is not supported; "
                          f"use one of the two")
    return new_context_groups(size)


def shard_model(model: nn.Module, unit_types: tuple[type, ...] | None = None,
                reshard_after_forward: bool = True, mp_policy=None) -> nn.Module:
    """Apply FSDP2 to every `unit_types` module (default: the Mamba blocks) and to the root.

    Args:
        model: the full model, on its device, with its initial weights (the same on every rank:
            seed before building it; FSDP keeps each rank's slice of these weights).
        unit_types: module classes that become FSDP units (default: `modules.block.Block`).
        reshard_after_forward: free each unit's gathered weights after its forward (saves
            memory, gathers again for backward).
        mp_policy: a `torch.distributed.fsdp.MixedPrecisionPolicy` (e.g. bf16 params with fp32
            gradient reduction on GPUs), or None for the parameters' dtype.
    Returns:
        the same module, sharded in place (its parameters are now DTensors).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from mamba_bio_audio.modules.block import Block

    if not dist.is_initialized():
        raise RuntimeError("shard_model needs torch.distributed to be initialised (torchrun)")
    unit_types = unit_types or (Block,)
    kwargs = {"reshard_after_forward": reshard_after_forward,
              "mp_policy": mp_policy or MixedPrecisionPolicy()}
    # fully_shard replaces the parameters: carry over their flags (`_no_weight_decay`, ...)
    flags = {name: {k: v for k, v in vars(p).items() if k.startswith("_no_")}
             for name, p in model.named_parameters()}
    for module in model.modules():
        if isinstance(module, unit_types):
            fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    for name, p in model.named_parameters():
        for key, value in flags.get(name, {}).items():
            setattr(p, key, value)
    return model


def wrap_model(model: nn.Module, world: int, fsdp: bool, device: torch.device) -> nn.Module:
    """Under torchrun (world > 1): FSDP2 shards (`fsdp`) or a DDP replica; else `model` itself."""
    if world > 1 and fsdp:
        return shard_model(model)
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on rank 0 (on the CPU); {} on the other ranks.

    A collective: every rank must call it (at the same point of training).
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))


def gathered_model(model: nn.Module) -> nn.Module | None:
    """A plain CPU replica of a sharded `PretrainedModel` holding its full weights, on rank 0
    (None on the other ranks), e.g. to `save_pretrained` an ordinary checkpoint folder that
    `from_pretrained`, `predict`, `generate` and `classify --init` read on one device.
    A collective: every rank calls it (at the same point of training)."""
    weights = full_state_dict(model)
    if dist.get_rank() != 0:
        return None
    return plain_replica(model, weights)


def is_sharded(model: nn.Module) -> bool:
    """Whether `model` was sharded with FSDP2 (its parameters are DTensors)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


class gradient_sync:
    """Context for one micro-batch of gradient accumulation: `sync=False` skips the gradient
    all-reduce (DDP) or reduce-scatter (FSDP) until the last micro-batch."""

    def __init__(self, model: nn.Module, sync: bool):
        self.model, self.sync, self._ddp = model, sync, None

    def __enter__(self):
        if self.sync:
            return self
        if isinstance(self.model, nn.parallel.DistributedDataParallel):
            self._ddp = self.model.no_sync()
            self._ddp.__enter__()
        elif is_sharded(self.model):
            self.model.set_requires_gradient_sync(False)
        return self

    def __exit__(self, *exc):
        if self._ddp is not None:
            return self._ddp.__exit__(*exc)
        if not self.sync and is_sharded(self.model):
            self.model.set_requires_gradient_sync(True)
        return False


def full_optimizer_state(model: nn.Module, optimizer) -> dict:
    """The optimizer state of a sharded model in full (keyed by parameter name), on the CPU of
    rank 0 ({} elsewhere). A collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(
        full_state_dict=True, cpu_offload=True))


def plain_replica(model: nn.Module, weights: dict) -> nn.Module:
    """A CPU `PretrainedModel` of the same config holding `weights` (from `full_state_dict`);
    tied weights stay tied."""
    plain = type(model)(model.config)
    plain.load_state_dict(weights, strict=True)
    return plain


def load_full_weights(model: nn.Module, path: str | Path) -> None:
    """Load a `model.safetensors` written by `save_pretrained` into a sharded model (every rank
    reads the file and keeps its slice). Tied weights, stored once, are filled under each name."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    weights = load_file(str(path))
    aliases: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(name)
    for names in aliases.values():
        stored = next((n for n in names if n in weights), None)
        for n in names:
            if stored is not None and n not in weights:
                weights[n] = weights[stored]
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))


def load_full_optimizer_state(model: nn.Module, optimizer, state: dict) -> None:
    """Load an optimizer state saved by `full_optimizer_state` into every rank's shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state,
                             options=StateDictOptions(full_state_dict=True))
