"""mamba_bio_audio: Mamba selective state space models for genomics and audio.

Importing the package, or its data layer (`mamba_bio_audio.data`), loads no model code and leaves
the process environment as it is; the console script (cli.py) sets the CPU defaults of a run.
"""

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
