"""mamba_bio_audio: Mamba selective state space models for genomics and audio."""

import os

# PyTorch's OpenMP threads spin while they wait by default. On a busy or shared CPU that makes
# training 10-50x slower (measured on a 2-core machine); passive waiting costs little when idle.
# Set before torch is first imported; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import MambaConfig
from .models import MambaClassifier, MambaLM

__version__ = "0.1.0"

__all__ = ["MambaConfig", "MambaLM", "MambaClassifier", "__version__"]
