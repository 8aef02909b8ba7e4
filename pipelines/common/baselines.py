"""Honest baselines that every pipeline reports beside the model.

- `markov_baselines`: order-k Markov models (additive smoothing) fitted on the training tokens;
  bits per token on validation for every k <= max_order; k and the smoothing chosen on validation,
  then reported on test. The yardstick for language-model pretraining.
- `kmer_logistic_regression`: normalised k-mer counts (k = 1..k_max) + logistic regression, for
  DNA classification.
- `mfcc_logistic_regression`: per-clip MFCC means and standard deviations (torchaudio) + logistic
  regression, for audio clip classification.
- `classification_metrics`: accuracy, macro F1, MCC and the confusion matrix (scikit-learn).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

SMOOTHING = (0.01, 0.1, 1.0)


def _as_arrays(seqs) -> list[np.ndarray]:
    if isinstance(seqs, (np.ndarray, torch.Tensor)) and np.ndim(seqs) == 1:
        seqs = [seqs]
    return [np.asarray(s, dtype=np.int64).ravel() for s in seqs]


def _codes(seq: np.ndarray, order: int, base: int) -> tuple[np.ndarray, np.ndarray]:
    """(context code, symbol) for every position of `seq` that has `order` tokens before it."""
    n = len(seq)
    if n <= order:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ctx = np.zeros(n - order, dtype=np.int64)
    for j in range(order):
        ctx = ctx * base + seq[j:n - order + j]
    return ctx, seq[order:]


class MarkovModel:
    """An order-k Markov model over a compact alphabet, with additive (Lidstone) smoothing.

    Counts are kept sparse (sorted unique codes), so large orders cost memory only for the
    contexts that occur.
    """

    def __init__(self, order: int, alphabet_size: int):
        self.order, self.base = order, alphabet_size
        if (order + 1) * math.log2(max(alphabet_size, 2)) > 62:
            raise ValueError(f"order {order} is too large for an alphabet of {alphabet_size}")

    def fit(self, seqs: Sequence[np.ndarray]) -> MarkovModel:
        pairs, ctxs = [], []
        for s in seqs:
            ctx, sym = _codes(s, self.order, self.base)
            pairs.append(ctx * self.base + sym)
            ctxs.append(ctx)
        self.pair_keys, self.pair_counts = np.unique(np.concatenate(pairs), return_counts=True)
        self.ctx_keys, self.ctx_counts = np.unique(np.concatenate(ctxs), return_counts=True)
        return self

    @staticmethod
    def _lookup(keys: np.ndarray, counts: np.ndarray, query: np.ndarray) -> np.ndarray:
        if len(keys) == 0:
            return np.zeros(len(query), dtype=np.float64)
        pos = np.clip(np.searchsorted(keys, query), 0, len(keys) - 1)
        return np.where(keys[pos] == query, counts[pos], 0).astype(np.float64)

    def bits(self, seqs: Sequence[np.ndarray], alpha: float) -> tuple[float, int]:
        """(total bits, number of tokens scored); the first `order` tokens of each seq are skipped."""
        total, n = 0.0, 0
        for s in seqs:
            ctx, sym = _codes(s, self.order, self.base)
            pair = self._lookup(self.pair_keys, self.pair_counts, ctx * self.base + sym)
            cnt = self._lookup(self.ctx_keys, self.ctx_counts, ctx)
            p = (pair + alpha) / (cnt + alpha * self.base)
            total += float(-np.log2(p).sum())
            n += len(sym)
        return total, n


def markov_baselines(train, val, test, max_order: int = 8) -> dict:
    """Fit order-0..max_order Markov models on `train`; choose k and smoothing on `val`.

    Args:
        train, val, test: token id sequences (a 1-D array or a list of them, e.g. one per
            chromosome).
        max_order: the largest context length k tried (lowered when the alphabet makes the codes
            overflow int64).
    Returns:
        {"orders": {k: {"val_bits_per_token", "test_bits_per_token", "alpha"}}, "best_order": k,
         "test_bits_per_token": bits of the best k on test, "val_bits_per_token": ...}.
        Every k is scored on the same positions (the first max_order tokens of each sequence are
        left out for all k), so the numbers compare.
    """
    train, val, test = _as_arrays(train), _as_arrays(val), _as_arrays(test)
    symbols = np.unique(np.concatenate(train + val + test))
    remap = np.zeros(int(symbols.max()) + 1, dtype=np.int64)
    remap[symbols] = np.arange(len(symbols))
    train, val, test = ([remap[s] for s in group] for group in (train, val, test))
    base = len(symbols)
    max_order = min(max_order, int(62 / math.log2(max(base, 2))) - 1)
    orders = {}
    for k in range(max_order + 1):
        model = MarkovModel(k, base).fit(train)
        # Score positions max_order.. of each sequence for every k: drop the first max_order - k.
        val_k = [s[max_order - k:] for s in val]
        test_k = [s[max_order - k:] for s in test]
        best = None
        for alpha in SMOOTHING:
            bits, n = model.bits(val_k, alpha)
            if best is None or bits / n < best[0]:
                best = (bits / n, alpha)
        tbits, tn = model.bits(test_k, best[1])
        orders[k] = {"val_bits_per_token": best[0], "test_bits_per_token": tbits / tn,
                     "alpha": best[1]}
    best_k = min(orders, key=lambda k: orders[k]["val_bits_per_token"])
    return {"orders": orders, "best_order": best_k,
            "val_bits_per_token": orders[best_k]["val_bits_per_token"],
            "test_bits_per_token": orders[best_k]["test_bits_per_token"]}


def kmer_features(seqs: Sequence, k_max: int = 6, acgt_ids: Sequence[int] = (7, 8, 9, 10)
                  ) -> np.ndarray:
    """Normalised counts of every k-mer over A, C, G, T for k = 1..k_max, one row per sequence.

    Args:
        seqs: token id sequences (DNATokenizer ids; `acgt_ids` are the ids of A, C, G, T).
        k_max: the longest k-mer; the feature count is sum(4**k).
    Returns:
        float32 array (n_seqs, sum_k 4**k); each k's block sums to 1 (0 if the sequence is shorter).
    """
    lut = np.full(256, -1, dtype=np.int64)
    lut[list(acgt_ids)] = np.arange(4)
    blocks = []
    for k in range(1, k_max + 1):
        rows = np.zeros((len(seqs), 4 ** k), dtype=np.float32)
        for i, s in enumerate(seqs):
            x = lut[np.asarray(s, dtype=np.int64)]
            n = len(x) - k + 1
            if n <= 0:
                continue
            code = np.zeros(n, dtype=np.int64)
            valid = np.ones(n, dtype=bool)
            for j in range(k):
                part = x[j:j + n]
                valid &= part >= 0
                code = code * 4 + np.maximum(part, 0)
            counts = np.bincount(code[valid], minlength=4 ** k).astype(np.float32)
            rows[i] = counts / max(counts.sum(), 1.0)
        blocks.append(rows)
    return np.concatenate(blocks, axis=1)


def _logistic_regression(x_train, y_train, x_test, seed: int = 0) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0,
                                                             random_state=seed))
    # One BLAS thread: these problems are small, and spinning BLAS threads on a busy CPU made
    # the fit 200x slower (13 s instead of 0.06 s, measured on 2 shared cores).
    with threadpool_limits(1):
        clf.fit(x_train, y_train)
        return clf.predict(x_test)


def kmer_logistic_regression(train_seqs, train_labels, test_seqs, test_labels, n_classes: int,
                             k_max: int = 6) -> dict:
    """k-mer counts + logistic regression; returns `classification_metrics` on the test items."""
    pred = _logistic_regression(kmer_features(train_seqs, k_max), np.asarray(train_labels),
                                kmer_features(test_seqs, k_max))
    metrics = classification_metrics(test_labels, pred, n_classes)
    metrics["name"] = "k-mer counts (k<=%d) + logistic regression" % k_max
    return metrics


def mfcc_features(waves: Sequence[torch.Tensor], sample_rate: int, n_mfcc: int = 20) -> np.ndarray:
    """Per-clip MFCC mean and standard deviation over time: (n_clips, 2 * n_mfcc)."""
    import torchaudio

    mfcc = torchaudio.transforms.MFCC(sample_rate=sample_rate, n_mfcc=n_mfcc,
                                      melkwargs={"n_fft": 512, "hop_length": 128, "n_mels": 40})
    rows = []
    with torch.no_grad():
        for w in waves:
            m = mfcc(torch.as_tensor(w, dtype=torch.float32).reshape(1, -1))[0]  # (n_mfcc, frames)
            rows.append(torch.cat([m.mean(-1), m.std(-1, unbiased=False)]).numpy())
    return np.stack(rows)


def mfcc_logistic_regression(train_waves, train_labels, test_waves, test_labels, n_classes: int,
                             sample_rate: int) -> dict:
    """MFCC statistics + logistic regression; returns `classification_metrics` on the test clips."""
    pred = _logistic_regression(mfcc_features(train_waves, sample_rate), np.asarray(train_labels),
                                mfcc_features(test_waves, sample_rate))
    metrics = classification_metrics(test_labels, pred, n_classes)
    metrics["name"] = "MFCC mean/std + logistic regression"
    return metrics


def classification_metrics(y_true, y_pred, n_classes: int) -> dict:
    """accuracy, macro F1, Matthews correlation and the (true x predicted) confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, matthews_corrcoef

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(n_classes))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
