"""Backbones (isotropic, U-Net) and task models (LM, classifier)."""

from .backbone import MambaBackbone
from .classifier import MambaClassifier
from .lm import MambaLM
from .pretrained import PretrainedModel
from .unet import UNet, UNetState

__all__ = ["MambaBackbone", "MambaClassifier", "MambaLM", "PretrainedModel", "UNet", "UNetState"]
