"""Whole short clips as language-model items (SC09-style unconditional generation).

``WholeClips`` wraps a ``LabeledClips`` set of mu-law ids (waveform front-end): each item is one
clip padded with silence (or cropped) to the set's ``seq_len`` samples, as SC09's 1 s clips are
one word and silence. Every position is a target, the silence after the word included, so that
a model learns where a word ends; ``clip_mask`` marks the clip's own samples, for scores that
leave the padding out.
"""

from __future__ import annotations

import torch

from .base import SplitDataset


class WholeClips(SplitDataset):
    """LM items ``{"ids": LongTensor (seq_len,), "mask": BoolTensor (seq_len,) all True,
    "clip_mask": BoolTensor (seq_len,) True on the clip's samples}`` of a ``LabeledClips`` set.

    Args:
        clips: a ``LabeledClips`` with a mu-law (or linear) tokenizer, not a feature front-end.
    """

    def __init__(self, clips):
        if getattr(clips.tokenizer, "feature_dim", 0):
            raise ValueError("WholeClips needs clips of token ids (a waveform tokenizer), not "
                             "feature frames")
        self.clips, self.split, self.seed = clips, clips.split, clips.seed
        self.tokenizer, self.seq_len = clips.tokenizer, clips.seq_len
        self.sample_rate, self.num_samples = clips.sample_rate, len(clips)

    def __getitem__(self, index: int) -> dict:
        item = self.clips[index]
        return {"ids": item["ids"], "mask": torch.ones_like(item["mask"]),
                "clip_mask": item["mask"]}

    def iter_tokens(self, chunk_size: int | None = None):
        """(clip index, ids) of every clip, padded as the items are (the padding is modelled)."""
        for i in range(len(self)):
            yield i, self[i]["ids"]
