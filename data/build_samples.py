"""Rebuild the bundled samples in ``data/samples/`` from the project's copy of the public data.

Run ``python -m mamba_bio_audio.data.build_samples SOURCE [DEST]``, where SOURCE is the folder
described in ``data/README.md`` (genomes/, species/, genomic_benchmarks/, audio/). What it changes:
FASTA files are compressed with BGZF (Biopython's ``Bio.bgzf``; bytes inside are unchanged) and
the spoken-digit WAV files are re-encoded losslessly as FLAC (same samples, same rate), the
Genomic Benchmarks CSVs are gzipped (``gzip_file``). Everything else is copied byte for byte. Indexes (.fai/.gzi) are not written: readers build them at first use.
"""

import argparse
import gzip
import shutil
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from Bio import bgzf

DEFAULT_DEST = Path(__file__).resolve().parent / "samples"


def bgzip(src: Path, dst: Path) -> None:
    """Compress ``src`` into the BGZF file ``dst`` (readable by pyfaidx, samtools and gzip)."""
    with open(src, "rb") as f, bgzf.BgzfWriter(str(dst), "wb", compresslevel=9) as out:
        while block := f.read(1 << 20):
            out.write(block)


def gzip_file(src: Path, dst: Path) -> None:
    """gzip -9 without a time stamp or name in the header (the same bytes on every rebuild)."""
    with open(src, "rb") as f, open(dst, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, filename="", mtime=0) as out:
            shutil.copyfileobj(f, out)


def wav_to_flac(src: Path, dst: Path) -> None:
    """Re-encode a 16-bit PCM WAV as FLAC and check that every sample survives unchanged."""
    info = sf.info(str(src))
    if info.subtype != "PCM_16":
        raise ValueError(f"{src}: expected 16-bit PCM, found {info.subtype}")
    samples, rate = sf.read(str(src), dtype="int16")
    sf.write(str(dst), samples, rate, format="FLAC", subtype="PCM_16")
    back, _ = sf.read(str(dst), dtype="int16")
    if not np.array_equal(samples, back):
        raise RuntimeError(f"{dst}: FLAC round trip changed the samples")


def build(source: Path, dest: Path) -> None:
    """Write the whole bundle from ``source`` into ``dest``."""
    for sub in ("genomes", "species", "labeled/uci_splice", "labeled/genomic_benchmarks",
                "audio/fsdd", "audio/long"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "genomes/lambda_phage.fa", dest / "genomes/lambda_phage.fa")
    bgzip(
        source / "genomes/saccharomyces_cerevisiae_R64-1-1.fa",
        dest / "genomes/saccharomyces_cerevisiae_R64-1-1.fa.gz",
    )
    for fasta in sorted((source / "species").glob("*.fa")):
        bgzip(fasta, dest / "species" / (fasta.name + ".gz"))
    for name in ("splice.data", "splice.names"):
        shutil.copyfile(
            source / "genomic_benchmarks/uci_splice" / name, dest / "labeled/uci_splice" / name
        )
    for name in ("human_nontata_promoters", "human_enhancers_cohn"):
        gzip_file(source / "genomic_benchmarks" / name / "test.csv",
                  dest / "labeled/genomic_benchmarks" / f"{name}.csv.gz")
    for wav in sorted((source / "audio/fsdd").glob("*.wav")):
        wav_to_flac(wav, dest / "audio/fsdd" / (wav.stem + ".flac"))
    for flac in sorted((source / "audio/long").glob("*.flac")):
        shutil.copyfile(flac, dest / "audio/long" / flac.name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder with genomes/, species/, audio/, ...")
    parser.add_argument("dest", type=Path, nargs="?", default=DEFAULT_DEST)
    args = parser.parse_args(argv)
    build(args.source, args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
