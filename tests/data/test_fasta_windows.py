"""Genome windows: FASTA/BGZF reading, splits, BED, reproducibility, index caching, bad files."""

import gzip
import os
import random
import time
import warnings

import pytest
import torch
from Bio import bgzf
from mamba_bio_audio.data import (
    LAMBDA_FASTA,
    YEAST_FASTA,
    YEAST_SPLITS,
    DNATokenizer,
    FastaFile,
    GenomeWindows,
)
from mamba_bio_audio.data import fasta as fasta_module

from mamba_bio_audio.errors import DataError


def random_dna(n, seed=0, alphabet="ACGT"):
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


def write_fasta(path, records, width=60, bgzip=False):
    text = "".join(
        f">{name} description\n"
        + "".join(seq[i : i + width] + "\n" for i in range(0, len(seq), width))
        for name, seq in records.items()
    )
    if bgzip:
        with bgzf.BgzfWriter(str(path), "wb") as f:
            f.write(text.encode())
    else:
        path.write_text(text)
    return path


@pytest.fixture
def two_records(tmp_path):
    records = {"chr1": random_dna(5000, 1), "chr2": random_dna(3001, 2).lower()}
    return write_fasta(tmp_path / "g.fa", records), records


@pytest.mark.parametrize("bgzip", [False, True])
def test_fetch_matches_the_file(tmp_path, bgzip):
    records = {"a": random_dna(1234, 3), "b": random_dna(777, 4)}
    fa = FastaFile(write_fasta(tmp_path / ("g.fa.gz" if bgzip else "g.fa"), records, bgzip=bgzip))
    assert fa.names == ["a", "b"] and fa.lengths == {"a": 1234, "b": 777}
    assert fa.fetch("a", 100, 250) == records["a"][100:250]
    assert fa.fetch("b", 700, 777) == records["b"][700:]
    with pytest.raises(DataError, match="no record named 'c'"):
        fa.fetch("c", 0, 1)


def test_windows_are_reproducible_and_change_with_epoch(two_records):
    path, _ = two_records
    a = GenomeWindows(path, 100, "train", seed=3, num_samples=50)
    b = GenomeWindows(path, 100, "train", seed=3, num_samples=50)
    first = [a[i]["ids"] for i in range(50)]
    assert all(torch.equal(x, b[i]["ids"]) for i, x in enumerate(first))
    assert all(
        torch.equal(x, a[i]["ids"]) for i, x in enumerate(first)
    )  # order of access is irrelevant
    b.set_epoch(1)
    assert sum(torch.equal(x, b[i]["ids"]) for i, x in enumerate(first)) < 5
    assert not torch.equal(GenomeWindows(path, 100, "train", seed=4)[0]["ids"], first[0])


def test_lower_case_windows_are_upper_cased(two_records):
    path, records = two_records
    ds = GenomeWindows(path, 200, "train", records={"train": ["chr2"]}, num_samples=20)
    tok = DNATokenizer()
    for i in range(20):
        region, _ = ds.window(i)
        assert tok.decode(ds[i]["ids"]) == records["chr2"][region.start : region.end].upper()
        assert ds[i]["mask"].all() and ds[i]["ids"].shape == (200,)


def test_fraction_splits_never_overlap(two_records):
    path, _ = two_records
    bounds = {}
    for split in ("train", "val", "test"):
        ds = GenomeWindows(path, 50, split, mode="random", num_samples=300, seed=1)
        for i in range(len(ds)):
            region, _ = ds.window(i)
            bounds.setdefault((split, region.name), []).append((region.start, region.end))
    for name, length in (("chr1", 5000), ("chr2", 3001)):
        train_end = max(e for _, e in bounds[("train", name)])
        val = bounds[("val", name)]
        test_start = min(s for s, _ in bounds[("test", name)])
        assert train_end <= round(0.8 * length) <= min(s for s, _ in val)
        assert max(e for _, e in val) <= round(0.9 * length) <= test_start


def test_record_splits_on_the_bundled_yeast_genome():
    for split, names in YEAST_SPLITS.items():
        ds = GenomeWindows(
            YEAST_FASTA, 1024, split, records=YEAST_SPLITS, mode="random", num_samples=100
        )
        assert {ds.window(i)[0].name for i in range(100)} <= set(names)
        assert all(ds[i]["ids"].shape == (1024,) for i in range(10))
    val = GenomeWindows(YEAST_FASTA, 1024, "val", records=YEAST_SPLITS)
    assert len(val) == 1091291 // 1024  # XV tiled without overlap
    starts = [val.window(i)[0].start for i in range(len(val))]
    assert starts == list(range(0, 1024 * len(val), 1024))


def test_sequential_windows_ignore_epoch_and_cap(two_records):
    path, _ = two_records
    ds = GenomeWindows(path, 100, "test")
    assert ds.mode == "sequential"
    before = [ds[i]["ids"] for i in range(len(ds))]
    ds.set_epoch(7)
    assert all(torch.equal(x, ds[i]["ids"]) for i, x in enumerate(before))
    assert len(GenomeWindows(path, 100, "train", mode="sequential", max_windows=7)) == 7


def test_reverse_complement_augmentation(two_records):
    path, records = two_records
    ds = GenomeWindows(path, 64, "train", rc_aug=True, num_samples=60)
    tok = DNATokenizer()
    strands = set()
    for i in range(60):
        region, strand = ds.window(i)
        seq = records[region.name][region.start : region.end].upper()
        expect = tok.reverse_complement(seq) if strand == "-" else seq
        assert tok.decode(ds[i]["ids"]) == expect
        strands.add(strand)
    assert strands == {"+", "-"}


def test_iter_tokens_covers_the_split_in_order(two_records):
    path, records = two_records
    ds = GenomeWindows(path, 10, "train", records={"train": ["chr1", "chr2"]})
    tok = DNATokenizer()
    got = {}
    for key, chunk in ds.iter_tokens(chunk_size=333):
        got[key] = got.get(key, "") + tok.decode(chunk)
    assert got == {0: records["chr1"], 1: records["chr2"].upper()}


def test_bed_intervals_with_and_without_split_column(two_records, tmp_path):
    path, _ = two_records
    bed = tmp_path / "regions.bed"
    bed.write_text(
        "# comment\nchr1\t0\t2000\ttrain\nchr1\t2000\t3000\tvalid\nchr2\t100\t3001\ttest\n"
    )
    ds = GenomeWindows(path, 100, "val", bed=bed, mode="random", num_samples=50)
    assert all(
        ds.window(i)[0].name == "chr1" and 2000 <= ds.window(i)[0].start <= 2900 for i in range(50)
    )
    plain = tmp_path / "plain.bed"
    plain.write_text("chr1 1000 2000\n")
    test = GenomeWindows(path, 50, "test", bed=plain)
    assert [(r.name, r.start, r.end) for r in test.regions] == [("chr1", 1900, 2000)]
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\t10\tx\n")
    with pytest.raises(DataError, match="bad.bed, line 1"):
        GenomeWindows(path, 50, "train", bed=bad)
    unknown = tmp_path / "unknown.bed"
    unknown.write_text("chrX\t0\t100\n")
    with pytest.raises(DataError, match="chrX"):
        GenomeWindows(path, 50, "train", bed=unknown)


def test_read_only_folder_keeps_the_index_in_the_cache(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = write_fasta(folder / "g.fa.gz", {"x": random_dna(3000, 5)}, bgzip=True)
    monkeypatch.setattr(fasta_module, "_is_writable", lambda folder: False)
    monkeypatch.setenv("MAMBA_BIO_AUDIO_CACHE", str(tmp_path / "cache"))
    ds = GenomeWindows(path, 100, "train", num_samples=5)
    assert len(ds[0]["ids"]) == 100
    assert sorted(p.suffix for p in folder.iterdir()) == [".gz"]
    cached = sorted(p.name.split("_", 1)[1] for p in (tmp_path / "cache" / "fasta_index").iterdir())
    assert cached == ["g.fa.gz.fai", "g.fa.gz.gzi"]


def test_works_in_dataloader_workers(two_records):
    path, _ = two_records
    ds = GenomeWindows(path, 64, "train", num_samples=16)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    assert torch.equal(
        torch.cat([b["ids"] for b in batches]), torch.stack([ds[i]["ids"] for i in range(16)])
    )


def test_missing_empty_and_non_fasta_files(tmp_path):
    with pytest.raises(DataError, match="nope.fa: FASTA file not found"):
        GenomeWindows(tmp_path / "nope.fa", 10)
    (tmp_path / "empty.fa").write_text("")
    with pytest.raises(DataError, match="empty.fa: the file is empty"):
        GenomeWindows(tmp_path / "empty.fa", 10)
    (tmp_path / "notes.fa").write_text("ACGT is not a header\n>x\nACGT\n")
    with pytest.raises(DataError, match="notes.fa: not a FASTA file: line 1"):
        GenomeWindows(tmp_path / "notes.fa", 10)
    (tmp_path / "ragged.fa").write_text(">x\nACGTACGT\nACG\nACGTACGT\n")
    with pytest.raises(DataError, match="ragged.fa: malformed FASTA"):
        GenomeWindows(tmp_path / "ragged.fa", 4)
    assert not list(tmp_path.glob("*.tmp*"))  # no half-built index left behind


def test_plain_gzip_is_copied_to_bgzf_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAMBA_BIO_AUDIO_CACHE", str(tmp_path / "cache"))
    seq = random_dna(5000)
    with gzip.open(tmp_path / "plain.fa.gz", "wt") as f:  # gzip, not bgzip (UCSC, NCBI)
        f.write(">x\n" + seq + "\n")
    fa = FastaFile(tmp_path / "plain.fa.gz")
    assert fa.fetch("x", 1234, 4321) == seq[1234:4321]
    copies = list((tmp_path / "cache" / "bgzf").glob("*plain.fa.gz"))
    assert len(copies) == 1 and fa.path == copies[0]
    assert "BGZF copy" in capsys.readouterr().err
    mtime = copies[0].stat().st_mtime_ns
    assert FastaFile(tmp_path / "plain.fa.gz").fetch("x", 0, 10) == seq[:10]
    assert copies[0].stat().st_mtime_ns == mtime  # found again, not rewritten
    assert "BGZF copy" not in capsys.readouterr().err
    assert not list((tmp_path / "cache").rglob("*.tmp*"))


def test_record_shorter_than_the_window(tmp_path):
    path = write_fasta(tmp_path / "short.fa", {"tiny": random_dna(500)})
    with pytest.raises(
        DataError, match=r"short.fa.*record 'tiny'.*shorter than the window of 1024"
    ):
        GenomeWindows(path, 1024, "train", records={"train": ["tiny"]})
    path = write_fasta(tmp_path / "mixed.fa", {"tiny": random_dna(500), "big": random_dna(4000, 1)})
    with pytest.warns(UserWarning, match="skipping 1 region"):
        ds = GenomeWindows(path, 1024, "train", records={"train": ["tiny", "big"]}, num_samples=10)
    assert {ds.window(i)[0].name for i in range(10)} == {"big"}


def test_file_of_only_n(tmp_path):
    path = write_fasta(tmp_path / "gap.fa", {"gap": "N" * 5000})
    with pytest.raises(DataError, match="gap.fa: .*all N"):
        GenomeWindows(path, 100, "train")
    with pytest.raises(DataError, match="gap.fa: .*all N"):
        GenomeWindows(path, 100, "test")


def test_windows_with_many_n_are_redrawn(tmp_path):
    seq = random_dna(2000) + "N" * 2000
    path = write_fasta(tmp_path / "half.fa", {"x": seq})
    ds = GenomeWindows(
        path, 100, "train", records={"train": ["x"]}, num_samples=100, max_n_frac=0.05
    )
    assert all((ds[i]["ids"] == 11).sum() <= 5 for i in range(100))


def test_iupac_characters_in_windows_become_n(tmp_path):
    path = write_fasta(tmp_path / "iupac.fa", {"x": "ACGTRYKM" * 100})
    ds = GenomeWindows(
        path, 8, "train", records={"train": ["x"]}, mode="sequential", max_n_frac=0.5
    )
    assert ds[0]["ids"].tolist() == [7, 8, 9, 10, 11, 11, 11, 11]


def test_lambda_sample_opens():
    ds = GenomeWindows(LAMBDA_FASTA, 1024, "train")
    assert ds.fasta.lengths == {"gi|9626243|ref|NC_001416.1|": 48502}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ds[0]["ids"].shape == (1024,)


def test_stale_index_is_rebuilt(tmp_path):
    path = write_fasta(tmp_path / "g.fa", {"x": random_dna(500, 1)})
    assert FastaFile(path).lengths == {"x": 500}
    write_fasta(path, {"x": random_dna(800, 2), "y": random_dna(90, 3)}, width=70)
    earlier = time.time() - 100  # the index predates the new FASTA
    os.utime(str(path) + ".fai", (earlier, earlier))
    fa = FastaFile(path)
    assert fa.lengths == {"x": 800, "y": 90} and fa.fetch("y", 0, 90) == random_dna(90, 3)
