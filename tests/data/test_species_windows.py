"""Species windows on the bundled genomes and on small folders the tests write."""

import shutil

import pytest
import torch
from mamba_bio_audio.data import SPECIES_DIR, SpeciesWindows

from mamba_bio_audio.errors import DataError

SPECIES = [
    "escherichia_coli_K12_MG1655",
    "helicobacter_pylori_G27",
    "staphylococcus_aureus_N315",
    "streptococcus_suis_SC84",
    "vibrio_cholerae_O1_N16961",
]


def test_bundled_species_classes_balance_and_held_out_regions():
    train = SpeciesWindows(SPECIES_DIR, 1024, "train", num_samples=200, seed=0)
    test = SpeciesWindows(SPECIES_DIR, 1024, "test", max_windows_per_class=40)
    assert train.class_names == test.class_names == SPECIES
    labels = [train[i]["label"] for i in range(200)]
    assert [labels.count(k) for k in range(5)] == [40] * 5
    assert len(test) == 200 and [test[i]["label"] for i in range(200)].count(4) == 40
    for ds in (train, test):
        for i in range(0, len(ds), 7):
            label, region, _ = ds.window(i)
            length = ds.samplers[label][0].fasta.lengths[region.name]
            if ds is train:
                assert region.end <= round(0.8 * length)
            else:
                assert region.start >= round(0.9 * length)
    item = train[0]
    assert item["ids"].shape == item["mask"].shape == (1024,) and item["ids"].max() <= 11


def test_held_out_chromosome_per_species():
    vibrio = {
        "vibrio_cholerae_O1_N16961": {
            "train": ["gi|12057212|gb|AE003852.1|"],
            "val": ["gi|12057213|gb|AE003853.1|"],
            "test": ["gi|12057213|gb|AE003853.1|"],
        }
    }
    for split in ("train", "test"):
        ds = SpeciesWindows(SPECIES_DIR, 512, split, records=vibrio, mode="random", num_samples=50)
        names = {ds.window(i)[1].name for i in range(50) if ds.window(i)[0] == 4}
        assert names == set(vibrio["vibrio_cholerae_O1_N16961"][split])
    with pytest.raises(DataError, match=r"names species \['vibrio'\]"):
        SpeciesWindows(SPECIES_DIR, 512, records={"vibrio": {}})


def test_lower_case_species_is_read():
    suis = SpeciesWindows(SPECIES_DIR, 256, "val", max_windows_per_class=3)
    label = suis.class_names.index("streptococcus_suis_SC84")
    ids = [suis[i]["ids"] for i in range(len(suis)) if suis[i]["label"] == label]
    assert len(ids) == 3 and all(((x >= 7) & (x <= 10)).float().mean() > 0.99 for x in ids)


def test_reproducible_per_epoch():
    ds = SpeciesWindows(SPECIES_DIR, 128, "train", num_samples=20, seed=5, rc_aug=True)
    first = [ds[i]["ids"] for i in range(20)]
    again = SpeciesWindows(SPECIES_DIR, 128, "train", num_samples=20, seed=5, rc_aug=True)
    assert all(torch.equal(x, again[i]["ids"]) for i, x in enumerate(first))
    again.set_epoch(1)
    assert not all(torch.equal(x, again[i]["ids"]) for i, x in enumerate(first))


def write(path, seq, name="r"):
    path.write_text(
        f">{name}\n" + "\n".join(seq[i : i + 60] for i in range(0, len(seq), 60)) + "\n"
    )


def test_bad_species_files_are_skipped_when_allowed(tmp_path):
    write(tmp_path / "alpha.fa", "ACGT" * 2000)
    write(tmp_path / "beta.fasta", "GGCA" * 2000)
    (tmp_path / "gamma.fa").write_text("this is not fasta\n")
    with pytest.raises(DataError, match="gamma.fa: not a FASTA file"):
        SpeciesWindows(tmp_path, 100, "train")
    with pytest.warns(UserWarning, match="skipped 1 of 3 species files"):
        ds = SpeciesWindows(tmp_path, 100, "train", skip_bad=True)
    assert ds.class_names == ["alpha", "beta"] and len(ds.skipped) == 1


def test_species_folder_errors(tmp_path):
    with pytest.raises(DataError, match="folder of FASTA files not found"):
        SpeciesWindows(tmp_path / "missing", 100)
    with pytest.raises(DataError, match="no FASTA files"):
        SpeciesWindows(tmp_path, 100)
    write(tmp_path / "alpha.fa", "ACGT" * 2000)
    with pytest.raises(DataError, match="at least 2"):
        SpeciesWindows(tmp_path, 100)
    write(tmp_path / "beta.fa", "ACGT" * 20)
    with pytest.raises(DataError, match=r"beta.fa \(species 'beta'.*shorter than the window"):
        SpeciesWindows(tmp_path, 100, "test")
    shutil.copy(tmp_path / "alpha.fa", tmp_path / "alpha.fasta")
    with pytest.raises(DataError, match=r"several files for species \['alpha'\]"):
        SpeciesWindows(tmp_path, 10)


def test_iter_tokens_per_class():
    ds = SpeciesWindows(SPECIES_DIR, 1024, "test", max_windows_per_class=1)
    total = sum(chunk.numel() for _, chunk in ds.iter_tokens(label=1))
    assert total == 1652982 - round(0.9 * 1652982)
