"""Paths of the real data bundled with the package (``data/README.md``: sources and licenses).

The files live in ``samples/`` beside this module, so they are found after ``pip install`` too.
"""

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"

LAMBDA_FASTA = SAMPLES_DIR / "genomes" / "lambda_phage.fa"
"""Phage lambda, 48,502 bp, one record (plain FASTA)."""

YEAST_FASTA = SAMPLES_DIR / "genomes" / "saccharomyces_cerevisiae_R64-1-1.fa.gz"
"""Yeast S288C R64-1-1: 16 chromosomes (I..XVI) and Mito, 12.2 Mb, BGZF-compressed FASTA."""

YEAST_SPLITS = {
    "train": [
        "I",
        "II",
        "III",
        "IV",
        "V",
        "VI",
        "VII",
        "VIII",
        "IX",
        "X",
        "XI",
        "XII",
        "XIII",
        "XIV",
    ],
    "val": ["XV"],
    "test": ["XVI"],
}
"""Held-out-chromosome splits of the yeast genome (Mito is left out: it is 83 % AT)."""

SPECIES_DIR = SAMPLES_DIR / "species"
"""Five bacterial genomes, one BGZF FASTA per species; the class is the file name."""

SPLICE_DATA = SAMPLES_DIR / "labeled" / "uci_splice" / "splice.data"
"""UCI splice junctions: 3,190 sequences of 60 bp, classes EI, IE, N."""

GENOMIC_BENCHMARKS = {
    name: SAMPLES_DIR / "labeled" / "genomic_benchmarks" / f"{name}.csv.gz"
    for name in ("human_nontata_promoters", "human_enhancers_cohn")
}
"""Genomic Benchmarks' official *test* splits (``seq,label`` CSVs, gzip): promoters, 9,034 x 251 bp;
enhancers (Cohn), 6,948 x 500 bp. ``data.kind=labeled data.path=NAME`` reads one by its name."""

FSDD_DIR = SAMPLES_DIR / "audio" / "fsdd"
"""Free Spoken Digit Dataset: 3,000 clips, 8 kHz mono FLAC, named ``{digit}_{speaker}_{index}``."""

LONG_AUDIO_DIR = SAMPLES_DIR / "audio" / "long"
"""Four real recordings of 46-72 s (music, whale song, read speech), 22,050 Hz mono FLAC."""


def sample_path(relative: str) -> Path:
    """Path of a bundled file, e.g. ``sample_path("genomes/lambda_phage.fa")``; raises if absent."""
    path = SAMPLES_DIR / relative
    if not path.exists():
        raise FileNotFoundError(f"no bundled sample {relative!r} in {SAMPLES_DIR}")
    return path
