"""Whole clips as LM items (data/clips.py) and the front-end's in-memory normalisation."""

import shutil

import pytest
import torch

from mamba_bio_audio.data import FSDD_DIR, AudioFrontEnd, LabeledClips, LogMel, MuLaw
from mamba_bio_audio.data.clips import WholeClips, clip_ids


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    for path in sorted(FSDD_DIR.glob("*_theo_1?.flac"))[:6]:
        shutil.copy(path, folder / path.name)
    return folder


def test_a_whole_clip_item_is_the_front_ends_encoding_padded_with_silence(clips):
    labeled = LabeledClips(clips, "train", seq_len=8000, fractions=(1.0, 0.0, 0.0))
    whole = WholeClips(labeled)
    assert whole.frontend is labeled.frontend and len(whole) == len(labeled)
    for i in range(len(whole)):
        item, wave = whole[i], labeled.waves[i]
        n = min(len(wave), 8000)
        assert torch.equal(item["ids"][:n], labeled.frontend.encode(wave)[:n])
        assert bool((item["ids"][n:] == MuLaw().pad_id).all()) and bool(item["mask"].all())
        assert int(item["clip_mask"].sum()) == n
        assert torch.equal(item["ids"], labeled[i]["ids"])  # what the classifier set holds too


def test_clip_ids_pads_or_crops_and_normalise_follows_the_peak_rule():
    fe = AudioFrontEnd(MuLaw(), 8000)
    ids, mask = clip_ids(fe, torch.tensor([0.5, -1.0]), 4)
    assert torch.equal(ids, MuLaw().encode(torch.tensor([0.5, -1.0, 0.0, 0.0])))
    assert mask.tolist() == [True, True, False, False]
    assert clip_ids(fe, torch.linspace(-1, 1, 10), 3)[0].shape == (3,)
    assert torch.equal(fe.normalise(torch.tensor([0.0, 0.25, -0.5])),
                       torch.tensor([0.0, 0.5, -1.0]))
    assert torch.equal(fe.normalise(torch.zeros(3)), torch.zeros(3))  # silence stays silence
    unscaled = AudioFrontEnd(MuLaw(), 8000, scale=None)
    assert torch.equal(unscaled.normalise(torch.tensor([0.25])), torch.tensor([0.25]))


def test_whole_clips_refuse_feature_frames(clips):
    mel = LabeledClips(clips, "train", fractions=(1.0, 0.0, 0.0), tokenizer=LogMel(8000, 24))
    with pytest.raises(ValueError, match="token ids"):
        WholeClips(mel)
