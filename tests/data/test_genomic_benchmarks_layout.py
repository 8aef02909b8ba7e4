"""Genomic Benchmarks as users have them: the folder the `genomic-benchmarks` package downloads
(`<name>/{train,test}/<class>/*.txt`, one sequence a file; made here, the package is not used)
and the `seq,label` CSVs of the Hugging Face mirrors."""

import random

import pytest

from mamba_bio_audio.cli import main as cli
from mamba_bio_audio.data import LabeledSequences
from mamba_bio_audio.errors import DataError


def random_dna(rng, n):
    return "".join(rng.choice("ACGT") for _ in range(n))


def make_benchmark(root, n_train=30, n_test=10, length=24, seed=0):
    """A folder laid out as genomic-benchmarks writes one: {split}/{class}/{index}.txt."""
    rng = random.Random(seed)
    seqs = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for label in ("negative", "positive"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                seq = random_dna(rng, length)
                (folder / f"{i}.txt").write_text(seq)  # no newline, as the package writes
                seqs[(split, label, str(i))] = seq
    return seqs


def test_folder_layout_official_split_and_val_from_train(tmp_path):
    root = tmp_path / "demo_benchmark"
    seqs = make_benchmark(root)
    train, val, test = (LabeledSequences(root, s) for s in ("train", "val", "test"))
    assert train.class_names == ["negative", "positive"]
    # the official test split is kept as is; val is drawn from the official train split
    assert sorted((r.label, r.name) for r in test.records) == sorted(
        (lab, i) for (s, lab, i) in seqs if s == "test")
    assert len(train) + len(val) == 60 and len(test) == 20
    assert {r.label for r in val.records} == {"negative", "positive"}
    for ds, split in ((train, "train"), (val, "train"), (test, "test")):
        for r in ds.records:
            assert r.sequence == seqs[(split, r.label, r.name)]
    again = LabeledSequences(root, "val")
    assert [r.where for r in again.records] == [r.where for r in val.records]
    assert train[0]["ids"].shape == (24,)


def test_folder_of_class_folders_without_splits(tmp_path):
    root = tmp_path / "bench"
    make_benchmark(root)
    flat = root / "train"  # <class>/*.txt only: split by assign_splits (80 / 10 / 10)
    ds = [LabeledSequences(flat, s) for s in ("train", "val", "test")]
    assert sum(len(d) for d in ds) == 60 and all(len(d) > 0 for d in ds)


@pytest.mark.parametrize("breakage, match", [
    (lambda r: (r / "train" / "positive" / "3.txt").write_text("  \n"), "3.txt: empty sequence"),
    (lambda r: (r / "extra").mkdir(), "mixes split folders"),
    (lambda r: [p.unlink() for p in (r / "test" / "negative").glob("*.txt")],
     "no .txt files"),
    (lambda r: (r / "test" / "positive" / "1.txt").write_bytes(b"AC\xff\xfeGT"), "not a text"),
])
def test_bad_folders(tmp_path, breakage, match):
    root = tmp_path / "bench"
    make_benchmark(root, n_train=4, n_test=2)
    breakage(root)
    with pytest.raises(DataError, match=match):
        LabeledSequences(root, "train")


def test_classify_reads_the_folder_and_a_seq_label_csv(tmp_path, capsys):
    root = tmp_path / "bench"
    seqs = make_benchmark(root, n_train=12, n_test=4)
    tiny = ["model.d_model=8", "model.n_layer=1", "model.d_state=4", "train.steps=2",
            "train.eval_every=2", "train.batch_size=4", "train.warmup_steps=1",
            "train.progress=false", "--no-baseline", "data.kind=labeled", "data.seq_len=24"]
    assert cli(["classify", "--out", str(tmp_path / "a"), *tiny, f"data.path={root}"]) == 0
    # the official 8 test items; val: 1 of each class's 12 official train items (0.1 / 0.9)
    assert "22 train / 2 val / 8 test items" in capsys.readouterr().err
    csv = tmp_path / "test.csv"  # the Hugging Face mirrors' layout
    csv.write_text("seq,label\n" + "".join(f"{q},{1 if lab == 'positive' else 0}\n"
                                           for (s, lab, i), q in seqs.items()))
    assert cli(["classify", "--out", str(tmp_path / "b"), *tiny, f"data.path={csv}"]) == 0
    assert cli(["classify", "--out", str(tmp_path / "c"), *tiny,
                f"data.path={tmp_path / 'nothing'}"]) == 2
    assert "nothing: labelled-sequence file not found" in capsys.readouterr().err


def test_bundled_benchmark_by_name_is_split_deterministically():
    """`data.path=human_enhancers_cohn` reads the bundled official test split and splits it 80 /
    10 / 10 by assign_splits (stratified, by a hash of the sequence): the same every time."""
    from mamba_bio_audio.pipelines.common.datasets import classification_datasets
    from mamba_bio_audio.pipelines.common.run_config import DataConfig

    d = DataConfig(kind="labeled", path="human_enhancers_cohn", seq_len=500)
    data = classification_datasets(d)
    sizes = [len(data.train), len(data.val), len(data.test)]
    assert sum(sizes) == 6948 and all(abs(n - f * 6948) <= 2 for n, f in zip(sizes, (.8, .1, .1)))
    assert data.class_names == ["0", "1"]
    again = classification_datasets(d)
    assert [r.sequence for r in again.test.records] == [r.sequence for r in data.test.records]
    train = {r.sequence for r in data.train.records}
    assert not train & {r.sequence for r in data.test.records}
