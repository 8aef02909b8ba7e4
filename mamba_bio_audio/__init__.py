"""mamba_bio_audio: Mamba selective state space models for genomics and audio."""

import os

# PyTorch's OpenMP threads spin while they wait by default. On a busy or shared CPU that makes
# training 10-50x slower (measured on a 2-core machine); passive waiting costs little when idle.
# Set before torch is first imported; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

__all__ = ["MambaConfig", "MambaLM", "MambaClassifier", "__version__"]


def __getattr__(name):
    """Import the model classes (and torch) on first use, so that `mamba-bio-audio --help`
    answers without importing torch."""
    if name == "MambaConfig":
        from .config import MambaConfig

        return MambaConfig
    if name in ("MambaLM", "MambaClassifier"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
