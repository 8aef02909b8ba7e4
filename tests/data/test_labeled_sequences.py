"""Labelled sequences: UCI splice (bundled), CSV/TSV and FASTA files, splits and bad input."""

import gzip
import warnings

import pytest
import torch
from mamba_bio_audio.data import SPLICE_DATA, DNATokenizer, LabeledSequences, read_labeled

from mamba_bio_audio.errors import DataError


def test_uci_splice_split_is_stratified_deterministic_and_disjoint():
    with pytest.warns(UserWarning, match="read as N"):
        train = LabeledSequences(SPLICE_DATA, "train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        val, test = LabeledSequences(SPLICE_DATA, "val"), LabeledSequences(SPLICE_DATA, "test")
    assert train.class_names == ["EI", "IE", "N"] and train.seq_len == 60
    assert len(train) + len(val) + len(test) == 3190
    seqs = [
        {r.sequence for r in ds.records} for ds in (train, val, test)
    ]  # the file has duplicates
    assert not (seqs[0] & seqs[1]) and not (seqs[0] & seqs[2]) and not (seqs[1] & seqs[2])
    for ds, share in ((train, 0.8), (test, 0.1)):
        counts = [sum(1 for lab in ds.labels if lab == k) for k in range(3)]
        assert all(abs(c - share * n) <= 3 for c, n in zip(counts, (767, 768, 1655))), counts
    again = LabeledSequences(SPLICE_DATA, "test")
    assert [r.name for r in again.records] == [r.name for r in test.records]
    other_seed = LabeledSequences(SPLICE_DATA, "test", seed=1)
    assert {r.sequence for r in other_seed.records} != seqs[2]
    item = test[0]
    assert item["ids"].shape == item["mask"].shape == (60,) and item["mask"].all()
    assert DNATokenizer().decode(item["ids"]) == test.records[0].sequence


def test_uci_ambiguity_codes_are_counted():
    counts = 0
    for split in ("train", "val", "test"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            counts += LabeledSequences(SPLICE_DATA, split).n_unknown
    assert counts == 4  # 2 D, 1 R, 1 S (the 56 N are valid tokens)


def test_csv_with_named_columns_padding_and_cropping(tmp_path):
    path = tmp_path / "seqs.csv"
    rows = [f"{'ACGT' * (k % 5 + 1)},{'yes' if k % 2 else 'no'}" for k in range(40)]
    path.write_text("sequence,target\n" + "\n".join(rows) + "\n")
    ds = LabeledSequences(path, "train", seq_len=10, label_column="target")
    assert ds.class_names == ["no", "yes"]
    lengths = {int(ds[i]["mask"].sum()) for i in range(len(ds))}
    assert lengths <= {4, 8, 10} and 10 in lengths
    short = next(i for i in range(len(ds)) if len(ds.records[i].sequence) == 4)
    assert ds[short]["ids"].tolist() == [7, 8, 9, 10] + [4] * 6
    left = LabeledSequences(
        path,
        "train",
        seq_len=10,
        label_column="target",
        tokenizer=DNATokenizer(padding_side="left"),
    )
    assert left[short]["ids"].tolist() == [4] * 6 + [7, 8, 9, 10]


@pytest.mark.parametrize("name", ["seqs.tsv", "seqs.tsv.gz"])
def test_tsv_with_split_column_and_numeric_labels(tmp_path, name):
    path = tmp_path / name
    lines = ["seq\tlabel\tsplit"] + [
        f"ACGTAC\t{k % 3 * 5}\t{s}"
        for k, s in zip(range(12), ["train"] * 6 + ["valid"] * 3 + ["test"] * 3)
    ]
    text = "\n".join(lines) + "\n"
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    ds = LabeledSequences(path, "val")
    assert ds.class_names == ["0", "5", "10"] and len(ds) == 3
    assert [ds[i]["label"] for i in range(3)] == [0, 1, 2]


def test_fasta_with_labels_in_headers(tmp_path):
    path = tmp_path / "seqs.fa"
    path.write_text(
        "".join(
            f">s{k} some words {'pos' if k % 2 else 'neg'}\nACGTACGTAC\nGG\n" for k in range(20)
        )
        + ">last label=pos\nAC\n"
    )
    ds = LabeledSequences(path, "train")
    records = read_labeled(path)
    assert (
        len(records) == 21 and records[0].sequence == "ACGTACGTACGG" and records[-1].label == "pos"
    )
    assert ds.class_names == ["neg", "pos"] and ds.seq_len == 12
    bad = tmp_path / "nolabel.fa"
    bad.write_text(">s1 a\nACGT\n>s2\nACGT\n")
    with pytest.raises(DataError, match=r"nolabel.fa, record 2 \('s2'\): no label"):
        read_labeled(bad)


def test_csv_without_the_named_columns(tmp_path):
    path = tmp_path / "cols.csv"
    path.write_text("dna,class\nACGT,1\n")
    with pytest.raises(
        DataError, match=r"cols.csv: no column 'seq'; the header has \['dna', 'class'\]"
    ):
        LabeledSequences(path)
    ds = LabeledSequences(path, sequence_column="dna", label_column="class", fractions=(1, 0, 0))
    assert len(ds) == 1
    with pytest.raises(DataError, match="no column 'label'"):
        LabeledSequences(path, sequence_column="dna")


def test_csv_with_an_empty_sequence(tmp_path):
    path = tmp_path / "empty_seq.csv"
    path.write_text("seq,label\nACGT,a\n,b\n")
    with pytest.raises(DataError, match="empty_seq.csv, line 3: empty sequence"):
        LabeledSequences(path)


def test_label_set_that_differs_between_splits(tmp_path):
    path = tmp_path / "drift.csv"
    path.write_text("seq,label,split\nACGT,a,train\nACGT,b,train\nACGA,c,test\nACGA,a,val\n")
    with pytest.raises(
        DataError, match=r"drift.csv: split 'test' has labels \['c'\] that do not appear"
    ):
        LabeledSequences(path, "train")
    path.write_text("seq,label,split\nACGT,a,train\nACGT,b,train\nACGA,a,test\nACGA,a,val\n")
    with pytest.warns(UserWarning, match=r"split 'test' has no examples of \['b'\]"):
        assert LabeledSequences(path, "test").class_names == ["a", "b"]


def test_missing_empty_and_unknown_files(tmp_path):
    with pytest.raises(DataError, match="missing.csv: labelled-sequence file not found"):
        LabeledSequences(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv: the file is empty"):
        LabeledSequences(tmp_path / "empty.csv")
    (tmp_path / "x.bin").write_text("seq,label\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        LabeledSequences(tmp_path / "x.bin")
    (tmp_path / "bad.data").write_text("EI, name, ACGT\nIE ACGT\n")
    with pytest.raises(DataError, match="bad.data, line 2: expected 'class, name, sequence'"):
        LabeledSequences(tmp_path / "bad.data")


def test_reverse_complement_augmentation_and_iter_tokens(tmp_path):
    path = tmp_path / "rc.csv"
    path.write_text("seq,label\n" + "\n".join(f"AACCG,{k % 2}" for k in range(20)) + "\n")
    ds = LabeledSequences(path, "train", rc_aug=True, fractions=(1, 0, 0))
    seen = {tuple(ds[i]["ids"].tolist()) for i in range(len(ds))}
    assert seen == {(7, 7, 8, 8, 9), (8, 9, 9, 10, 10)}
    assert all(torch.equal(ids, DNATokenizer().encode("AACCG")) for _, ids in ds.iter_tokens())
