"""Building blocks: the Mamba mixer, RMSNorm, residual blocks, masked pooling."""

from .block import Block, GatedMLP, Stack
from .mixer import Mamba, MixerState, SelectiveSSM
from .norm import RMSNorm
from .pooling import masked_pool

__all__ = ["Block", "GatedMLP", "Mamba", "MixerState", "RMSNorm", "SelectiveSSM", "Stack",
           "masked_pool"]
