"""Data layer: tokenizers, FASTA and audio readers, datasets, and the bundled real samples.

Knows nothing of models. Everything a pipeline needs is exported here.

Tokenizers have ``vocab_size``, ``pad_id``, ``to_dict()``/``from_dict()`` (``tokenizer_from_dict``
rebuilds any of them): ``DNATokenizer`` (HyenaDNA character ids: specials 0-6, A=7 C=8 G=9 T=10
N=11), ``MuLaw`` (256-level mu-law), ``LinearQuantizer``.

Audio becomes model inputs through one front-end, ``AudioFrontEnd`` (frontend.py): read -> mono
-> resample -> divide by the file's peak -> mu-law ids or log-mel frames; the audio datasets use
it, and so do the pipelines that read audio for a trained model, with the settings saved in the
checkpoint. Random and tiled windows come from one engine, ``base.WindowEngine``.

Datasets are map-style ``torch.utils.data.Dataset``s with a ``split`` argument ("train", "val",
"test"). Every item is a dict of tensors and ints that the default collate can batch:

    {"ids": LongTensor (L,), "mask": BoolTensor (L,) True on real tokens, "label": int}

("label" only for labelled sets, which also have ``class_names``; audio sets add "waveform",
FloatTensor (L,)). Item i of epoch e is a pure function of (seed, e, i): call ``set_epoch(e)``
before each epoch. ``iter_tokens()`` yields (key, LongTensor chunk) over the raw tokens of the
split (chunks with the same key follow on from each other), e.g. to fit n-gram baselines.
Random windows are the default for "train"; "val"/"test" default to sequential windows
(``mode="sequential"``), the same every epoch.

- ``GenomeWindows``: windows of a reference genome (plain or BGZF FASTA; split by record, by
  fraction of each record, or by a BED file).
- ``SpeciesWindows``: class-balanced windows from a folder of genomes, one per species.
- ``LabeledSequences``: CSV/TSV, FASTA-with-label or UCI splice files.
- ``RecordingWindows``: windows of long recordings (WAV/FLAC/OGG), split by time or by file.
- ``LabeledClips``: short labelled clips (spoken digits), label from the file name or folder;
  with ``tokenizer=LogMel(...)`` its items hold log-mel frames, "ids" FloatTensor (L, n_mels),
  L counting 10 ms frames.

Bad files raise ``mamba_bio_audio.errors.DataError`` naming the file (and line or record).
"""

from .audio import AUDIO_SUFFIXES, audio_info, iter_blocks, read_audio, resample, write_audio
from .base import WindowEngine, tile_starts
from .fasta import FASTA_SUFFIXES, FastaFile
from .genome import GenomeWindows, Region, read_bed
from .features import LogMel
from .frontend import AudioFrontEnd, AudioSource
from .labeled import LabeledSequences, read_labeled
from .recordings import LabeledClips, RecordingWindows, fsdd_split
from .samples import (
    FSDD_DIR,
    GENOMIC_BENCHMARKS,
    LAMBDA_FASTA,
    LONG_AUDIO_DIR,
    SAMPLES_DIR,
    SPECIES_DIR,
    SPLICE_DATA,
    YEAST_FASTA,
    YEAST_SPLITS,
    sample_path,
)
from .species import SpeciesWindows
from .tokenizers import DNATokenizer, LinearQuantizer, MuLaw, pad_or_crop, tokenizer_from_dict

__all__ = [
    "AUDIO_SUFFIXES",
    "FASTA_SUFFIXES",
    "AudioFrontEnd",
    "AudioSource",
    "WindowEngine",
    "tile_starts",
    "FSDD_DIR",
    "GENOMIC_BENCHMARKS",
    "LAMBDA_FASTA",
    "LONG_AUDIO_DIR",
    "SAMPLES_DIR",
    "SPECIES_DIR",
    "SPLICE_DATA",
    "YEAST_FASTA",
    "YEAST_SPLITS",
    "DNATokenizer",
    "FastaFile",
    "GenomeWindows",
    "LabeledClips",
    "LabeledSequences",
    "LinearQuantizer",
    "LogMel",
    "MuLaw",
    "RecordingWindows",
    "Region",
    "SpeciesWindows",
    "audio_info",
    "fsdd_split",
    "iter_blocks",
    "pad_or_crop",
    "read_audio",
    "read_bed",
    "read_labeled",
    "resample",
    "sample_path",
    "tokenizer_from_dict",
    "write_audio",
]
