"""Whole short clips as language-model items (SC09-style unconditional generation).

``WholeClips`` wraps a ``LabeledClips`` set of mu-law ids (waveform front-end): each item is one
clip padded with silence (or cropped) to the set's ``seq_len`` samples, as SC09's 1 s clips are
one word and silence. Every position is a target, the silence after the word included, so that
a model learns where a word ends; ``clip_mask`` marks the clip's own samples, for scores that
leave the padding out. The clips are read, normalised and encoded by the set's audio front-end
(``frontend.AudioFrontEnd``); ``clip_ids`` is how a clip becomes an item, so that a clip made
elsewhere (generated, noise: ``evaluate-audio``) gets the same ids as a training item.
"""

from __future__ import annotations

import torch

from .base import SplitDataset


def clip_ids(frontend, wave: torch.Tensor, length: int,
             pad_side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (length,), clip mask (length,)) of normalised samples as a ``WholeClips`` item holds
    them: encoded by the front-end, padded with silence (``pad_id``) or cropped to ``length``."""
    return frontend.clip_inputs(frontend.encode(wave), length, pad_side)


class WholeClips(SplitDataset):
    """LM items ``{"ids": LongTensor (seq_len,), "mask": BoolTensor (seq_len,) all True,
    "clip_mask": BoolTensor (seq_len,) True on the clip's samples}`` of a ``LabeledClips`` set.

    Args:
        clips: a ``LabeledClips`` with a mu-law (or linear) tokenizer, not a feature front-end.
    """

    def __init__(self, clips):
        if clips.frontend.hop_length > 1:
            raise ValueError("WholeClips needs clips of token ids (a waveform tokenizer), not "
                             "feature frames")
        self.clips, self.split, self.seed = clips, clips.split, clips.seed
        self.frontend, self.tokenizer = clips.frontend, clips.tokenizer
        self.seq_len, self.sample_rate = clips.seq_len, clips.sample_rate
        self.num_samples = len(clips)

    def __getitem__(self, index: int) -> dict:
        ids, clip_mask = clip_ids(self.frontend, self.clips.waves[index], self.seq_len,
                                  self.clips.pad_side)
        return {"ids": ids, "mask": torch.ones_like(clip_mask), "clip_mask": clip_mask}

    def iter_tokens(self, chunk_size: int | None = None):
        """(clip index, ids) of every clip, padded as the items are (the padding is modelled)."""
        for i in range(len(self)):
            yield i, self[i]["ids"]
