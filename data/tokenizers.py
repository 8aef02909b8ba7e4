"""Tokenizers: DNA characters to ids, and audio samples to quantisation levels.

Every tokenizer has ``vocab_size``, ``pad_id``, ``to_dict()`` and ``from_dict()``, so that its
settings can be saved beside a model (``tokenizer_from_dict`` rebuilds any of them).

``DNATokenizer`` uses the ids of HyenaDNA's ``CharacterTokenizer`` (characters "ACGTN"):
``[CLS]=0 [SEP]=1 [BOS]=2 [MASK]=3 [PAD]=4 [RESERVED]=5 [UNK]=6 A=7 C=8 G=9 T=10 N=11``.
``MuLaw`` is 8-bit mu-law companding as in WaveNet and SaShiMi; ``LinearQuantizer`` splits
[-1, 1] into equal steps. ``tokenizer_from_dict`` also rebuilds the log-mel front-end
(``features.LogMel``), which encodes a waveform into float frames instead of ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torchaudio.functional as AF

from .features import LogMel

SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]")
NUCLEOTIDES = "ACGTN"

# Complement of every IUPAC code, upper and lower case (the same table as Biopython's).
_IUPAC_FROM = "ACGTURYKMSWBDHVNacgturykmswbdhvn"
_IUPAC_TO = "TGCAAYRMKSWVHDBNtgcaayrmkswvhdbn"
_COMPLEMENT = str.maketrans(_IUPAC_FROM, _IUPAC_TO)


class DNATokenizer:
    """One token per nucleotide, with HyenaDNA's ids.

    Input is upper-cased; IUPAC ambiguity codes and any other character become ``N``, and
    ``encode(..., return_unknown=True)`` also returns how many characters were replaced.

    Args:
        padding_side: "right" or "left": where ``pad`` and ``encode_batch`` put ``[PAD]``.
        add_special_tokens: if True, ``encode`` wraps each sequence as ``[CLS] seq [SEP]``.
    """

    type_name = "dna_char"
    cls_id, sep_id, bos_id, mask_id, pad_id, reserved_id, unk_id = range(7)

    def __init__(self, padding_side: str = "right", add_special_tokens: bool = False):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.padding_side = padding_side
        self.add_special_tokens = bool(add_special_tokens)
        self.vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
        self.vocab.update({ch: len(SPECIAL_TOKENS) + i for i, ch in enumerate(NUCLEOTIDES)})
        self.n_id = self.vocab["N"]
        # Byte -> id lookup; everything that is not a/c/g/t/n maps to N.
        self._lut = np.full(256, self.n_id, dtype=np.int64)
        self._known = np.zeros(256, dtype=bool)
        for ch in NUCLEOTIDES:
            for c in (ch, ch.lower()):
                self._lut[ord(c)] = self.vocab[ch]
                self._known[ord(c)] = True
        self._id_to_str = [tok for tok in self.vocab]
        # Reverse complement on ids: A<->T, C<->G, N and specials unchanged.
        self._rc_ids = torch.arange(self.vocab_size)
        for a, b in ("AT", "TA", "CG", "GC"):
            self._rc_ids[self.vocab[a]] = self.vocab[b]

    @property
    def vocab_size(self) -> int:
        """Number of ids (12)."""
        return len(self.vocab)

    @property
    def complement_ids(self) -> list[int]:
        """The id of each id's complement (A<->T, C<->G; N and specials map to themselves): the
        map an RC-equivariant model (``model.rc_equivariant``) is built with."""
        return self._rc_ids.tolist()

    def _bytes(self, seq: str | bytes) -> np.ndarray:
        if isinstance(seq, str):
            seq = seq.encode("ascii", errors="replace")
        return np.frombuffer(seq, dtype=np.uint8)

    def count_unknown(self, seq: str | bytes) -> int:
        """How many characters of ``seq`` are not A, C, G, T or N (in any case)."""
        return int((~self._known[self._bytes(seq)]).sum())

    def encode(self, seq: str | bytes, return_unknown: bool = False):
        """Token ids of a DNA string.

        Args:
            seq: nucleotides, any case; non-ASCII and non-ACGTN characters become N.
            return_unknown: also return the number of characters that were mapped to N.
        Returns:
            LongTensor (L,) (L + 2 with special tokens), or (ids, n_unknown).
        """
        raw = self._bytes(seq)
        ids = torch.from_numpy(self._lut[raw])
        if self.add_special_tokens:
            ids = torch.cat([torch.tensor([self.cls_id]), ids, torch.tensor([self.sep_id])])
        if return_unknown:
            return ids, int((~self._known[raw]).sum())
        return ids

    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """String of the ids; special tokens are dropped (or written as "[PAD]" etc.)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(
                    f"token id {i} is outside the vocabulary (0..{self.vocab_size - 1})"
                )
            if i < len(SPECIAL_TOKENS) and skip_special_tokens:
                continue
            out.append(self._id_to_str[i])
        return "".join(out)

    @staticmethod
    def reverse_complement(seq: str) -> str:
        """Reverse complement of a DNA string, IUPAC codes included; case is kept."""
        return seq.translate(_COMPLEMENT)[::-1]

    def reverse_complement_ids(self, ids: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:
        """Reverse complement of ids along the last dimension (specials and N stay themselves).

        With `mask` (same shape, True at real tokens, padding on the right), only the real
        tokens of each row are reverse-complemented and the padding stays on the right."""
        rc = self._rc_ids.to(ids.device)[ids]
        if mask is None:
            return rc.flip(-1)
        n = mask.sum(-1, keepdim=True)  # real tokens per row
        pos = torch.arange(ids.shape[-1], device=ids.device).expand_as(ids)
        if not torch.equal(mask, pos < n):
            raise ValueError("reverse_complement_ids: mask must mark a prefix of each row "
                             "(padding on the right)")
        return rc.gather(-1, torch.where(pos < n, n - 1 - pos, pos))

    def pad(self, ids: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad with ``[PAD]`` or crop to ``length``, on ``padding_side``.

        Returns:
            ids (length,) and mask (length,), True where a real token is.
        """
        return pad_or_crop(ids, length, self.pad_id, self.padding_side)

    def encode_batch(self, seqs: Sequence[str], length: int | None = None):
        """Encode several strings and pad them to ``length`` (default: the longest).

        Returns:
            ids (B, length) LongTensor and mask (B, length) BoolTensor.
        """
        encoded = [self.encode(s) for s in seqs]
        length = length if length is not None else max((len(e) for e in encoded), default=0)
        pairs = [self.pad(e, length) for e in encoded]
        ids = (
            torch.stack([p[0] for p in pairs])
            if pairs
            else torch.zeros(0, length, dtype=torch.long)
        )
        mask = (
            torch.stack([p[1] for p in pairs])
            if pairs
            else torch.zeros(0, length, dtype=torch.bool)
        )
        return ids, mask

    def to_dict(self) -> dict:
        """Settings to save with a model; ``DNATokenizer.from_dict`` restores them."""
        return {
            "type": self.type_name,
            "characters": NUCLEOTIDES,
            "padding_side": self.padding_side,
            "add_special_tokens": self.add_special_tokens,
        }

    @classmethod
    def from_dict(cls, d: dict) -> DNATokenizer:
        if d.get("characters", NUCLEOTIDES) != NUCLEOTIDES:
            raise ValueError(
                f"DNATokenizer only supports characters {NUCLEOTIDES!r}, got {d['characters']!r}"
            )
        return cls(
            padding_side=d.get("padding_side", "right"),
            add_special_tokens=d.get("add_special_tokens", False),
        )

    def __repr__(self) -> str:
        return (
            f"DNATokenizer(padding_side={self.padding_side!r}, "
            f"add_special_tokens={self.add_special_tokens})"
        )


def pad_or_crop(ids: torch.Tensor, length: int, pad_value, side: str = "right"):
    """Pad ``ids`` (L, ...) with ``pad_value`` or crop it to ``length`` along dim 0.

    Cropping keeps the start (side "right") or the end (side "left"), matching where padding goes.
    Returns the tensor and a (length,) bool mask, True on real entries.
    """
    n = ids.shape[0]
    if n >= length:
        kept = ids[:length] if side == "right" else ids[n - length :]
        return kept, torch.ones(length, dtype=torch.bool)
    fill = torch.full((length - n, *ids.shape[1:]), pad_value, dtype=ids.dtype)
    mask = torch.zeros(length, dtype=torch.bool)
    if side == "right":
        mask[:n] = True
        return torch.cat([ids, fill]), mask
    mask[length - n :] = True
    return torch.cat([fill, ids]), mask


class MuLaw:
    """Mu-law companding to ``levels`` ids (8-bit, 256 levels, by default), as WaveNet and SaShiMi.

    Args:
        levels: number of quantisation levels, also ``vocab_size``.

    ``encode`` expects a waveform in [-1, 1] and clips what lies outside (resampling can
    overshoot): the only clamp between a file and the model. How a recording is scaled into that
    range is the front-end's decision (``frontend.AudioFrontEnd``: the file's peak). ``pad_id`` is
    the id of silence (0.0), so padded audio decodes to silence.
    """

    type_name = "mulaw"

    def __init__(self, levels: int = 256):
        if levels < 2:
            raise ValueError(f"levels must be at least 2, got {levels}")
        self.levels = int(levels)

    @property
    def vocab_size(self) -> int:
        return self.levels

    @property
    def pad_id(self) -> int:
        return int(self.encode(torch.zeros(1))[0])

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform (..., T) float in [-1, 1] -> LongTensor (..., T) of ids in [0, levels)."""
        x = torch.as_tensor(waveform, dtype=torch.float32).clamp(-1.0, 1.0)
        return AF.mu_law_encoding(x, self.levels)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """LongTensor (..., T) of ids -> float waveform (..., T) in [-1, 1]."""
        return AF.mu_law_decoding(torch.as_tensor(ids), self.levels)

    def to_dict(self) -> dict:
        return {"type": self.type_name, "levels": self.levels}

    @classmethod
    def from_dict(cls, d: dict) -> MuLaw:
        """Rebuild from ``to_dict()``; older tokenizer.json files also hold ``"scale": null``."""
        if d.get("scale") is not None:
            raise ValueError(f"{cls.__name__}: scale={d['scale']!r} is no longer supported; "
                             "audio is scaled by the front-end (the file's peak)")
        return cls(levels=d.get("levels", 256))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(levels={self.levels})"


class LinearQuantizer(MuLaw):
    """Uniform quantisation of [-1, 1] into ``levels`` ids (same interface as ``MuLaw``)."""

    type_name = "linear"

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(waveform, dtype=torch.float32).clamp(-1.0, 1.0)
        return torch.round((x + 1) / 2 * (self.levels - 1)).long()

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(ids).float() / (self.levels - 1) * 2 - 1



TOKENIZERS = {cls.type_name: cls for cls in (DNATokenizer, MuLaw, LinearQuantizer, LogMel)}


def tokenizer_from_dict(d: dict):
    """Rebuild any tokenizer of this module from its ``to_dict()``."""
    kind = d.get("type")
    if kind not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer type {kind!r}; expected one of {sorted(TOKENIZERS)}")
    return TOKENIZERS[kind].from_dict(d)
