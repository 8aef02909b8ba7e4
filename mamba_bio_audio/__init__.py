"""mamba_bio_audio: Mamba selective state space models for genomics and audio."""

__version__ = "0.1.0"
