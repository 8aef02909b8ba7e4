"""A trained classifier's class probabilities: on the test set (classify), on files (predict) and
on generated clips (evaluate-audio); `pad_batch` pads and masks a batch of inputs of any length."""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def class_probabilities(model, ids: torch.Tensor, mask: torch.Tensor,
                        rc_tokenizer=None) -> torch.Tensor:
    """Softmax class probabilities (b, n_classes) of a classifier for a padded batch.

    With `rc_tokenizer` (a DNA tokenizer; `data.rc_test`), the mean of the probabilities of each
    sequence and of its reverse complement: a strand-symmetric prediction."""
    probs = torch.softmax(model(ids, mask=mask).float(), -1)
    if rc_tokenizer is not None:
        rc = rc_tokenizer.reverse_complement_ids(ids, mask)
        probs = (probs + torch.softmax(model(rc, mask=mask).float(), -1)) / 2
    return probs


def pad_batch(batch, pad_id, model_config):
    """(ids, mask) of a batch of (fields, ids, mask) items, padded with `pad_id` to its longest
    item (rounded up to what the model needs: a multiple of the U-Net's pooling, at least the
    conv's width). ids are (L,) token ids or (L, n_features) float frames; mask (L,) marks an
    item's real positions (None: all of them)."""
    length = max(len(ids) for _, ids, _ in batch)
    length += (-length) % model_config.pool_product
    length = max(length, model_config.d_conv)
    first = batch[0][1]
    ids = torch.full((len(batch), length, *first.shape[1:]), pad_id, dtype=first.dtype)
    mask = torch.zeros(len(batch), length, dtype=torch.bool)
    for i, (_, x, m) in enumerate(batch):
        ids[i, :len(x)] = x
        mask[i, :len(x)] = True if m is None else m
    return ids, mask


def predict_proba(model, dataset, batch_size: int, device, progress: bool = True,
                  desc: str = "predict", rc_tokenizer=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities (n, n_classes) of a classifier over a dataset, and the labels if any.
    `rc_tokenizer`: average each item with its reverse complement (see class_probabilities)."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    model.eval()
    probs, labels = [], []
    for batch in tqdm(DataLoader(dataset, batch_size=batch_size), desc=desc, leave=False,
                      disable=not progress):
        probs.append(class_probabilities(model, batch["ids"].to(device),
                                         batch["mask"].to(device), rc_tokenizer).cpu().numpy())
        if "label" in batch:
            labels.append(np.asarray(batch["label"]))
    return np.concatenate(probs), (np.concatenate(labels) if labels else None)


@torch.no_grad()
def rc_flip_fraction(model, dataset, batch_size: int, device, tokenizer) -> float:
    """The fraction of a DNA dataset's items whose call (the argmax class of the model on one
    strand) changes when the item is reverse-complemented: 0 for an RC-invariant classifier."""
    from torch.utils.data import DataLoader

    model.eval()
    flips = n = 0
    for batch in DataLoader(dataset, batch_size=batch_size):
        ids, mask = batch["ids"].to(device), batch["mask"].to(device)
        rc = tokenizer.reverse_complement_ids(ids, mask)
        flips += int((model(ids, mask=mask).argmax(-1) != model(rc, mask=mask).argmax(-1)).sum())
        n += ids.shape[0]
    return flips / max(n, 1)
