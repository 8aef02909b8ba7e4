"""The bundled real samples: present, complete, documented, small enough, shipped in the wheel."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from mamba_bio_audio.data import (
    FSDD_DIR,
    GENOMIC_BENCHMARKS,
    LAMBDA_FASTA,
    LONG_AUDIO_DIR,
    SAMPLES_DIR,
    SPECIES_DIR,
    SPLICE_DATA,
    YEAST_FASTA,
    YEAST_SPLITS,
    FastaFile,
    read_labeled,
    sample_path,
)

from mamba_bio_audio import data

YEAST_LENGTHS = {
    "I": 230218,
    "II": 813184,
    "III": 316620,
    "IV": 1531933,
    "V": 576874,
    "VI": 270161,
    "VII": 1090940,
    "VIII": 562643,
    "IX": 439888,
    "X": 745751,
    "XI": 666816,
    "XII": 1078177,
    "XIII": 924431,
    "XIV": 784333,
    "XV": 1091291,
    "XVI": 948066,
    "Mito": 85779,
}
SPECIES_LENGTHS = {
    "escherichia_coli_K12_MG1655": 4639675,
    "staphylococcus_aureus_N315": 2814816,
    "helicobacter_pylori_G27": 1652982,
    "vibrio_cholerae_O1_N16961": 4033464,
    "streptococcus_suis_SC84": 2095898,
}


def bundled_files():
    return [p for p in SAMPLES_DIR.rglob("*") if p.is_file() and p.suffix not in (".fai", ".gzi")]


def test_samples_live_inside_the_package():
    assert SAMPLES_DIR.parent == Path(data.__file__).resolve().parent
    assert sample_path("genomes/lambda_phage.fa") == LAMBDA_FASTA
    with pytest.raises(FileNotFoundError, match="no bundled sample"):
        sample_path("genomes/hg38.fa")


def test_bundle_is_complete_and_under_40_mb():
    assert FastaFile(YEAST_FASTA).lengths == YEAST_LENGTHS
    assert set(YEAST_SPLITS["train"]) | set(YEAST_SPLITS["val"]) | set(YEAST_SPLITS["test"]) == set(
        YEAST_LENGTHS
    ) - {"Mito"}
    species = {
        p.name[: -len(".fa.gz")]: sum(FastaFile(p).lengths.values())
        for p in SPECIES_DIR.glob("*.fa.gz")
    }
    assert species == SPECIES_LENGTHS
    assert sum(1 for line in SPLICE_DATA.read_text().splitlines() if line.strip()) == 3190
    assert len(list(FSDD_DIR.glob("*.flac"))) == 3000
    assert len(list(LONG_AUDIO_DIR.glob("*.flac"))) == 4
    for name, (rows, length) in {"human_nontata_promoters": (9034, 251),
                                 "human_enhancers_cohn": (6948, 500)}.items():
        records = read_labeled(GENOMIC_BENCHMARKS[name])
        assert len(records) == rows and {len(r.sequence) for r in records} == {length}
        assert {r.label for r in records} == {"0", "1"}
    total = sum(p.stat().st_size for p in bundled_files())
    assert total < 40e6, total


def test_every_bundled_file_is_documented():
    readme = (SAMPLES_DIR.parent / "README.md").read_text()
    for path in bundled_files():
        if path.parent != FSDD_DIR:
            assert path.name in readme, f"{path.name} is not described in data/README.md"
    for license_name in ("CC BY-SA 4.0", "CC BY 4.0", "CC BY 3.0", "Public domain"):
        assert re.search(re.escape(license_name), readme, re.IGNORECASE), license_name


@pytest.mark.slow
def test_wheel_ships_the_samples(tmp_path):
    root = SAMPLES_DIR.parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(root)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode and re.search(
        r"No matching distribution|Could not fetch|connection", out.stderr, re.IGNORECASE
    ):
        pytest.skip("pip cannot fetch the build backend (no network)")
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert sum(n.startswith("mamba_bio_audio/data/samples/audio/fsdd/") for n in names) == 3000
    for rel in (
        "README.md",
        "samples/genomes/saccharomyces_cerevisiae_R64-1-1.fa.gz",
        "samples/labeled/uci_splice/splice.data",
    ):
        assert f"mamba_bio_audio/data/{rel}" in names
    assert not [n for n in names if n.endswith((".fai", ".gzi"))]


def test_build_helpers_are_lossless(tmp_path):
    from mamba_bio_audio.data.build_samples import bgzip, wav_to_flac

    (tmp_path / "g.fa").write_text(">x\nACGTNacgt\nAC\n")
    bgzip(tmp_path / "g.fa", tmp_path / "g.fa.gz")
    assert FastaFile(tmp_path / "g.fa.gz").fetch("x", 0, 11) == "ACGTNacgtAC"
    samples = (np.sin(np.arange(4000) / 7) * 20000).astype(np.int16)
    sf.write(tmp_path / "a.wav", samples, 8000, subtype="PCM_16")
    wav_to_flac(tmp_path / "a.wav", tmp_path / "a.flac")
    assert np.array_equal(sf.read(tmp_path / "a.flac", dtype="int16")[0], samples)
    sf.write(tmp_path / "f.wav", samples / 32768, 8000, subtype="FLOAT")
    with pytest.raises(ValueError, match="expected 16-bit PCM"):
        wav_to_flac(tmp_path / "f.wav", tmp_path / "f.flac")
