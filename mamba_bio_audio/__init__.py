"""mamba_bio_audio: Mamba selective state space models for genomics and audio."""

from .config import MambaConfig
from .models import MambaClassifier, MambaLM

__version__ = "0.1.0"

__all__ = ["MambaConfig", "MambaLM", "MambaClassifier", "__version__"]
