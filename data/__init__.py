"""Data layer: tokenizers, FASTA and audio readers, datasets, and the bundled real samples.

Knows nothing of models. Everything a pipeline needs is exported here.

Tokenizers (``vocab_size``, ``pad_id``, ``to_dict()``/``from_dict()``; ``tokenizer_from_dict``):
``DNATokenizer`` (HyenaDNA character ids), ``MuLaw`` (256-level mu-law), ``LinearQuantizer``.
"""

from .samples import (
    FSDD_DIR,
    LAMBDA_FASTA,
    LONG_AUDIO_DIR,
    SAMPLES_DIR,
    SPECIES_DIR,
    SPLICE_DATA,
    YEAST_FASTA,
    YEAST_SPLITS,
    sample_path,
)
from .tokenizers import DNATokenizer, LinearQuantizer, MuLaw, pad_or_crop, tokenizer_from_dict

__all__ = [
    "DNATokenizer", "MuLaw", "LinearQuantizer", "pad_or_crop", "tokenizer_from_dict",
    "SAMPLES_DIR", "LAMBDA_FASTA", "YEAST_FASTA", "YEAST_SPLITS", "SPECIES_DIR", "SPLICE_DATA",
    "FSDD_DIR", "LONG_AUDIO_DIR", "sample_path",
]
