"""Seeded generators for the Mamba paper's synthetic tasks: selective copying and induction heads.

Both tasks are sequences of token ids with answers at a few positions. An example is a pair

    ids      (length,) int64  the input sequence
    targets  (length,) int64  the answer at answer positions, IGNORE (-100) everywhere else

and a causal model must predict ``targets[t]`` from ``ids[: t + 1]`` (its output at position t).

Selective copying (Gu & Dao 2023, section 3.1 and appendix E.1): a length-L stretch of noise tokens
holds K data tokens at random positions; K marker tokens follow, and at the i-th marker the
model must output the i-th data token. The spacing of the data tokens varies from example to
example, so a time-invariant (LTI) model cannot solve it with a fixed convolution kernel.

    vocabulary (vocab_size V): 0 = noise, 1 = marker, 2..V-1 = data symbols
    ids:     [n n d1 n n n d2 ... n dK n | m m ... m]      length L + K
    targets: [.  .  .  ...             . | d1 d2 .. dK]

Induction heads (Olsson et al. 2022, as in the Mamba paper, section 4.1.2): a random sequence in
which a special trigger token appears once, followed by a value token; the sequence ends with
the trigger again and the model must output the value that followed it the first time.

    vocabulary (vocab_size V): 0..V-2 = ordinary tokens, V-1 = trigger
    ids:     [r r r ... TRIG v r r ... r TRIG]            length L
    targets: [.  .  .                 .  v   ]

Example i of epoch e is a pure function of (seed, e, i), so runs are reproducible and a dataset
gives fresh examples each epoch after ``set_epoch(e)``. This module knows nothing of models.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

IGNORE = -100
"""Target value at positions without an answer (the default ignore_index of cross_entropy)."""

NOISE, MARKER = 0, 1
"""Selective copying: the noise token and the marker token; data symbols are 2..V-1."""


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of example ``index`` of ``epoch``: a pure function of the three."""
    return np.random.default_rng([seed, epoch, index])


def selective_copying(rng: np.random.Generator, seq_len: int, n_tokens: int,
                      vocab_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """One selective-copying example.

    Args:
        rng: the random generator to draw from.
        seq_len: L, the length of the noisy stretch that holds the data tokens.
        n_tokens: K, the number of data tokens to memorise (K <= L).
        vocab_size: V >= 3; data symbols are drawn uniformly from 2..V-1.
    Returns:
        (ids, targets), both int64 of shape (L + K,). targets[L + i] is the i-th data token (in
        order of position); every other target is IGNORE.
    """
    if vocab_size < 3:
        raise ValueError(f"vocab_size={vocab_size}: selective copying needs >= 3 "
                         "(noise, marker and at least one data symbol)")
    if not 1 <= n_tokens <= seq_len:
        raise ValueError(f"n_tokens={n_tokens}: expected 1 <= n_tokens <= seq_len ({seq_len})")
    positions = np.sort(rng.choice(seq_len, size=n_tokens, replace=False))
    data = rng.integers(2, vocab_size, size=n_tokens)
    ids = np.full(seq_len + n_tokens, NOISE, dtype=np.int64)
    ids[positions] = data
    ids[seq_len:] = MARKER
    targets = np.full(seq_len + n_tokens, IGNORE, dtype=np.int64)
    targets[seq_len:] = data
    return ids, targets


def induction_heads(rng: np.random.Generator, seq_len: int,
                    vocab_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """One induction-heads example.

    Args:
        rng: the random generator to draw from.
        seq_len: L >= 3, the whole length (the final trigger included).
        vocab_size: V >= 3; ordinary tokens are 0..V-2, the trigger is V-1.
    Returns:
        (ids, targets), both int64 of shape (L,). The trigger appears at a uniform position
        p in [0, L-3] and at L-1 only; targets[L-1] = ids[p+1] (the value); other targets IGNORE.
    """
    if vocab_size < 3:
        raise ValueError(f"vocab_size={vocab_size}: induction heads needs >= 3 "
                         "(a trigger and at least two ordinary tokens)")
    if seq_len < 3:
        raise ValueError(f"seq_len={seq_len}: induction heads needs >= 3 (trigger, value, trigger)")
    trigger = vocab_size - 1
    ids = rng.integers(0, trigger, size=seq_len).astype(np.int64)
    p = int(rng.integers(0, seq_len - 2))
    ids[p] = trigger
    ids[-1] = trigger
    targets = np.full(seq_len, IGNORE, dtype=np.int64)
    targets[-1] = ids[p + 1]
    return ids, targets


TASKS = {"selective-copy", "induction-heads"}


class SyntheticTask(Dataset):
    """A map-style dataset of ``n_items`` examples of one task, fresh each epoch.

    Args:
        task: "selective-copy" or "induction-heads".
        n_items: examples per epoch.
        seq_len: L (see `selective_copying` / `induction_heads`).
        vocab_size: V (16 in the paper).
        n_tokens: K, selective copying only.
        seed: base seed; example i of epoch e depends on (seed, e, i) only.
    Items:
        {"ids": LongTensor (length,), "targets": LongTensor (length,)}; length is L + K for
        selective copying and L for induction heads.
    """

    def __init__(self, task: str, n_items: int, seq_len: int, vocab_size: int = 16,
                 n_tokens: int = 16, seed: int = 0):
        if task not in TASKS:
            raise ValueError(f"task={task!r}: expected one of {', '.join(sorted(TASKS))}")
        if n_items < 1:
            raise ValueError(f"n_items={n_items}: expected a positive number of examples")
        self.task, self.n_items, self.seq_len = task, n_items, seq_len
        self.vocab_size, self.n_tokens, self.seed = vocab_size, n_tokens, seed
        self.epoch = 0
        self.example(0)  # check the arguments now rather than inside a DataLoader

    def set_epoch(self, epoch: int) -> None:
        """Draw the examples of ``epoch`` from now on."""
        self.epoch = int(epoch)

    def set_seq_len(self, seq_len: int) -> None:
        """Change L (for sequence-length stages)."""
        self.seq_len = int(seq_len)

    @property
    def length(self) -> int:
        """Length of every example's ids."""
        return self.seq_len + (self.n_tokens if self.task == "selective-copy" else 0)

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, targets) of example ``index`` in the current epoch, as numpy arrays."""
        rng = example_rng(self.seed, self.epoch, index)
        if self.task == "selective-copy":
            return selective_copying(rng, self.seq_len, self.n_tokens, self.vocab_size)
        return induction_heads(rng, self.seq_len, self.vocab_size)

    def __len__(self) -> int:
        return self.n_items

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.n_items:
            raise IndexError(f"index {index} out of range for {self.n_items} examples")
        ids, targets = self.example(index)
        return {"ids": torch.from_numpy(ids), "targets": torch.from_numpy(targets)}
