"""DNA and audio tokenizers: HyenaDNA ids, IUPAC handling, reverse complement, quantisers."""

import random

import numpy as np
import pytest
import soundfile as sf
import torch
from Bio.Seq import Seq
from mamba_bio_audio.data import FSDD_DIR, DNATokenizer, LinearQuantizer, MuLaw, tokenizer_from_dict

HYENA_IDS = {
    "[CLS]": 0,
    "[SEP]": 1,
    "[BOS]": 2,
    "[MASK]": 3,
    "[PAD]": 4,
    "[RESERVED]": 5,
    "[UNK]": 6,
    "A": 7,
    "C": 8,
    "G": 9,
    "T": 10,
    "N": 11,
}


def test_ids_match_hyenadna_character_tokenizer():
    tok = DNATokenizer()
    assert tok.vocab == HYENA_IDS
    assert tok.vocab_size == 12 and tok.pad_id == 4
    assert tok.encode("ACGTN").tolist() == [7, 8, 9, 10, 11]


def test_lower_case_and_iupac_are_accepted_and_counted():
    tok = DNATokenizer()
    ids, unknown = tok.encode("acgtnRYKMSWBDHV-x?é", return_unknown=True)
    assert ids.tolist()[:5] == [7, 8, 9, 10, 11]
    assert (ids[5:] == tok.n_id).all()
    assert unknown == 14 == tok.count_unknown("acgtnRYKMSWBDHV-x?é")
    assert tok.encode("ACGT", return_unknown=True)[1] == 0


def test_decode_inverts_encode_and_handles_specials():
    tok = DNATokenizer(add_special_tokens=True)
    ids = tok.encode("acgGTn")
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
    assert tok.decode(ids) == "ACGGTN"
    assert tok.decode(ids, skip_special_tokens=False) == "[CLS]ACGGTN[SEP]"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([12])


def test_reverse_complement_agrees_with_biopython():
    rng = random.Random(0)
    alphabet = "ACGTNacgtnRYKMSWBDHVrykmswbdhv"
    tok = DNATokenizer()
    for _ in range(200):
        seq = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        assert tok.reverse_complement(seq) == str(Seq(seq).reverse_complement())


def test_reverse_complement_of_ids_matches_strings():
    rng = random.Random(1)
    tok = DNATokenizer()
    seq = "".join(rng.choice("ACGTN") for _ in range(1000))
    assert torch.equal(
        tok.reverse_complement_ids(tok.encode(seq)), tok.encode(tok.reverse_complement(seq))
    )
    batch = torch.stack([tok.encode(seq[:50]), tok.encode(seq[50:100])])
    assert torch.equal(
        tok.reverse_complement_ids(batch)[1], tok.encode(tok.reverse_complement(seq[50:100]))
    )


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_side(side):
    tok = DNATokenizer(padding_side=side)
    ids, mask = tok.encode_batch(["AC", "ACGT"])
    assert ids.shape == mask.shape == (2, 4)
    expect = [7, 8, 4, 4] if side == "right" else [4, 4, 7, 8]
    assert ids[0].tolist() == expect
    assert mask[0].tolist() == [i != 4 for i in expect]
    assert mask[1].all()
    cropped, mask = tok.pad(tok.encode("ACGTA"), 3)
    assert tok.decode(cropped) == ("ACG" if side == "right" else "GTA") and mask.all()
    with pytest.raises(ValueError, match="padding_side"):
        DNATokenizer(padding_side="middle")


def test_settings_round_trip():
    for tok in (
        DNATokenizer(padding_side="left", add_special_tokens=True),
        MuLaw(16),
        LinearQuantizer(16),
    ):
        again = tokenizer_from_dict(tok.to_dict())
        assert type(again) is type(tok) and again.to_dict() == tok.to_dict()
    with pytest.raises(ValueError, match="unknown tokenizer"):
        tokenizer_from_dict({"type": "bpe"})


def test_mulaw_range_clipping_and_silence():
    mu = MuLaw()
    x = torch.linspace(-1.5, 1.5, 1001)
    ids = mu.encode(x)
    assert ids.dtype == torch.long and ids.min() == 0 and ids.max() == 255
    assert mu.vocab_size == 256
    assert abs(float(mu.decode(torch.tensor([mu.pad_id])))) < 1e-3
    small = torch.tensor([0.001, -0.001])
    assert (mu.decode(mu.encode(small)) - small).abs().max() < 1e-3


def test_linear_quantizer_error_is_half_a_step():
    q = LinearQuantizer(256)
    x = torch.rand(10000) * 2 - 1
    assert (q.decode(q.encode(x)) - x).abs().max() <= 1 / 255 + 1e-6


def test_mulaw_settings_of_older_checkpoints_still_load():
    """tokenizer.json of older checkpoints holds "scale": null (scaling is the front-end's now)."""
    old = tokenizer_from_dict({"type": "mulaw", "levels": 256, "scale": None})
    assert type(old) is MuLaw and old.to_dict() == MuLaw().to_dict()
    with pytest.raises(ValueError, match="scale='minmax' is no longer supported"):
        tokenizer_from_dict({"type": "mulaw", "levels": 256, "scale": "minmax"})


def test_mulaw_snr_on_every_spoken_digit():
    mu = MuLaw(256)
    files = sorted(FSDD_DIR.glob("*.flac"))
    assert len(files) == 3000
    clips = [sf.read(str(path), dtype="float32")[0] for path in files]
    clips = [c / np.abs(c).max() for c in clips]
    x = torch.from_numpy(np.concatenate(clips))
    err = (x - mu.decode(mu.encode(x))).numpy()
    starts = np.cumsum([0] + [len(c) for c in clips[:-1]])
    signal = np.add.reduceat(x.numpy().astype(np.float64) ** 2, starts)
    noise = np.add.reduceat(err.astype(np.float64) ** 2, starts)
    snr = 10 * np.log10(signal / noise)
    assert snr.min() >= 35.0, (files[int(snr.argmin())], snr.min())


def test_reverse_complement_of_right_padded_rows():
    rng = random.Random(2)
    tok = DNATokenizer()
    seqs = ["".join(rng.choice("ACGTN") for _ in range(n)) for n in (7, 12, 1, 12)]
    ids, mask = tok.encode_batch(seqs)
    expect, _ = tok.encode_batch([tok.reverse_complement(s) for s in seqs])
    assert torch.equal(tok.reverse_complement_ids(ids, mask), expect)  # padding stays right
    with pytest.raises(ValueError, match="prefix"):
        tok.reverse_complement_ids(ids, mask.flip(-1))
