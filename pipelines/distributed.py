"""FSDP for Mamba models too large for one device: shard, train, gather a full checkpoint.

The trainer replicates the model on every rank (DistributedDataParallel under torchrun). When the
weights, gradients and AdamW moments (16 bytes per parameter in fp32) do not fit one GPU, shard
them over the ranks with FSDP2 (`torch.distributed.fsdp.fully_shard`):

    model = shard_model(MambaLM(cfg))            # after init_process_group, before the optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=...)
    ... forward / backward / step as usual; every rank feeds its own shard of the data ...
    save_full_pretrained(model, "ckpt", extra_files)   # all ranks call it; rank 0 writes

Each Mamba `Block` (mixer + norm, + MLP) is one FSDP unit: its parameters are all-gathered just
before its forward and backward and freed afterwards, so a rank holds one block in full at a time
plus its 1/world share of everything else. The embedding, the final norm and the (tied) LM head
form the root unit. The gradients are reduce-scattered (averaged), so with equal shards the
update equals that of one process on the whole batch; tests/pipelines/test_distributed.py checks
this on the CPU (gloo) against one process.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn


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
    for module in model.modules():
        if isinstance(module, unit_types):
            fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on rank 0 (on the CPU); {} on the other ranks.

    A collective: every rank must call it (at the same point of training).
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))


def save_full_pretrained(model: nn.Module, directory: str | Path,
                         extra_files: dict | None = None) -> Path | None:
    """Gather a sharded `PretrainedModel` and write an ordinary checkpoint folder from rank 0.

    The folder is the one `save_pretrained` writes (config.json, model.safetensors, extra files),
    so `from_pretrained`, `predict`, `generate` and `classify --init` read it on one device.
    A collective: every rank calls it; returns the folder on rank 0, None elsewhere.
    """
    weights = full_state_dict(model)
    if dist.get_rank() != 0:
        return None
    plain = type(model)(model.config)  # a CPU replica in full (tied weights stay tied)
    plain.load_state_dict(weights, strict=True)
    return plain.save_pretrained(directory, extra_files)
