"""Loss functions: `loss_fn(model, batch) -> LossOutput`, what the trainer optimises and evaluates.

- `lm_loss`: next-token cross-entropy (both strands for an RC-equivariant DNA LM; the window split
  over the ranks under context parallelism).
- `classifier_loss`: cross-entropy of the class logits, with the accuracy.
- `answer_loss`: the synthetic tasks' cross-entropy at the answer positions only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mamba_bio_audio.data.synthetic import IGNORE
from mamba_bio_audio.modules import context_parallel


@dataclass
class LossOutput:
    """What a loss function returns for one batch.

    loss: the scalar the optimizer sees, a mean over `weight` items.
    weight: how many items the mean is over (target tokens for an LM, examples for a classifier):
        a number, or a 0-d tensor where it depends on the batch's contents (a mask), so that no
        loss waits on the GPU for it (a step captured in a CUDA graph cannot; cuda_graph.py).
    tokens: how many input tokens the batch held (for tokens/s and `tokens_seen`).
    sums: extra metrics as sums over the batch; `evaluate` divides them by the total weight
        (e.g. {"accuracy": number_correct}).
    """

    loss: torch.Tensor
    weight: float
    tokens: int
    sums: dict = field(default_factory=dict)


def lm_loss(model, batch: dict) -> LossOutput:
    """Next-token cross-entropy in nats; logits at t predict ids[t + 1].

    The full window goes through the model (so U-Net lengths stay divisible by the pooling) and
    the last position's logits are dropped.
    """
    ids = batch["ids"]  # (b, l)
    if getattr(model, "module", model).config.rc_equivariant:
        return _lm_loss_both_strands(model, ids, batch.get("mask"))
    cp = context_parallel.active()
    if cp is not None:
        return _lm_loss_context_parallel(model, ids, batch.get("mask"), cp)
    logits = model(ids)[:, :-1]  # (b, l-1, V)
    targets = ids[:, 1:]
    mask = batch.get("mask")
    losses = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                             reduction="none")
    if mask is not None:
        m = mask[:, 1:].reshape(-1).float()
        n = m.sum().clamp_min(1)
        loss = (losses * m).sum() / n
        return LossOutput(loss, n, int(ids.numel()))
    return LossOutput(losses.mean(), float(targets.numel()), int(ids.numel()))


def _lm_loss_both_strands(model, ids, mask) -> LossOutput:
    """`lm_loss` of an RC-equivariant LM: the mean cross-entropy of its next-base head (logits at
    t predict ids[t + 1]) and of its previous-base head (logits at t predict ids[t - 1]), i.e. of
    the window read on both strands."""
    both = model(ids, both_strands=True).float()  # (b, l, 2, V)
    V = both.shape[-1]
    losses = torch.cat([
        F.cross_entropy(both[:, :-1, 0].reshape(-1, V), ids[:, 1:].reshape(-1), reduction="none"),
        F.cross_entropy(both[:, 1:, 1].reshape(-1, V), ids[:, :-1].reshape(-1), reduction="none")])
    m = (torch.ones_like(ids[:, 1:], dtype=torch.bool) if mask is None else mask[:, 1:])
    m = m.reshape(-1).float().repeat(2)
    n = m.sum().clamp_min(1)
    return LossOutput((losses * m).sum() / n, n, int(ids.numel()))


def _lm_loss_context_parallel(model, ids, mask, cp) -> LossOutput:
    """`lm_loss` with the window split over a context-parallel group (every rank holds the whole
    batch and runs the model on its slice; the last position of a slice predicts the next slice's
    first token). Each rank's loss is scaled so that the ranks' gradients, averaged as DDP does,
    are those of one process on whole windows, and its weight so that the logged mean is too."""
    s = ids.shape[1] // cp.size
    local = context_parallel.local_slice(ids, cp)
    targets = ids[:, cp.rank * s + 1:(cp.rank + 1) * s + 1]  # one fewer on the last rank
    logits = model(local)[:, :targets.shape[1]]
    losses = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                             reduction="none")
    if mask is not None:
        m = mask[:, cp.rank * s + 1:(cp.rank + 1) * s + 1].reshape(-1).float()
        losses, n = losses * m, float(mask[:, 1:].sum().clamp_min(1))
    else:
        n = float(ids.shape[0] * (ids.shape[1] - 1))
    return LossOutput(losses.sum() * cp.size / n, n / cp.size, int(local.numel()))


def classifier_loss(model, batch: dict) -> LossOutput:
    """Cross-entropy of the class logits; `sums["accuracy"]` counts the correct predictions.

    Under context parallelism every rank runs its slice and the pooling sums over the slices,
    so all ranks hold the same logits: each counts 1/size of the examples."""
    ids, mask = batch["ids"], batch.get("mask")
    cp = context_parallel.active()
    share = 1
    if cp is not None:
        ids = context_parallel.local_slice(ids, cp)
        mask = context_parallel.local_slice(mask, cp) if mask is not None else None
        share = cp.size
    logits = model(ids, mask=mask)  # (b, n_classes)
    labels = batch["label"]
    loss = F.cross_entropy(logits.float(), labels)
    correct = (logits.argmax(-1) == labels).sum()
    tokens = math.prod(ids.shape[:2])  # positions (frames for float features)
    return LossOutput(loss, float(labels.numel()) / share, int(tokens),
                      {"accuracy": correct / share})


def answer_loss(model, batch: dict, state_passing: int = 0) -> LossOutput:
    """Cross-entropy at the answer positions only; `sums["accuracy"]` counts correct answers.

    state_passing: n > 0: in training mode, every sequence of the batch starts from the recurrent
    state reached after n other sequences of the batch (run first, without gradient) instead of
    from zero, so the model also trains on states it would reach deep inside long inputs
    (Buitrago Ruiz & Gu, 2025). Evaluation always starts from zero.
    """
    ids, targets = batch["ids"], batch["targets"]  # (b, l) each
    state = None
    if state_passing and model.training:
        with torch.no_grad():
            state = getattr(model, "module", model).allocate_state(ids.shape[0], ids.device)
            for k in range(int(state_passing), 0, -1):  # sequences i - n, ..., i - 1
                model(ids.roll(k, 0), state)
    logits = model(ids, state).float()  # (b, l, V)
    answers = targets != IGNORE
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    correct = ((logits.argmax(-1) == targets) & answers).sum()
    return LossOutput(loss, answers.sum(), int(ids.numel()), {"accuracy": correct})


def bits(nats: float) -> float:
    return nats / math.log(2)
