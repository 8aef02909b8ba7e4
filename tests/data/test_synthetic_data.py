"""The synthetic-task generators: answers recoverable from the inputs, shapes, vocabularies, seeds."""

import numpy as np
import pytest
import torch

from mamba_bio_audio.data.synthetic import (IGNORE, MARKER, NOISE, SyntheticTask, example_rng,
                                            induction_heads, selective_copying)


def recover_copy(ids: np.ndarray, seq_len: int) -> np.ndarray:
    """The answer of a selective-copying example read off its inputs: the non-noise tokens."""
    prefix = ids[:seq_len]
    return prefix[prefix != NOISE]


def recover_induction(ids: np.ndarray, trigger: int) -> int:
    """The answer of an induction-heads example: the token after the first trigger."""
    first = int(np.flatnonzero(ids == trigger)[0])
    return int(ids[first + 1])


@pytest.mark.parametrize("seq_len,k,vocab", [(256, 16, 16), (16, 16, 16), (40, 1, 3), (1000, 7, 9)])
def test_selective_copying_answer_is_the_data_tokens_in_order(seq_len, k, vocab):
    for i in range(20):
        ids, targets = selective_copying(example_rng(3, 0, i), seq_len, k, vocab)
        assert ids.shape == targets.shape == (seq_len + k,)
        assert ids.dtype == targets.dtype == np.int64
        assert (ids[seq_len:] == MARKER).all()
        assert (targets[:seq_len] == IGNORE).all()
        data = recover_copy(ids, seq_len)
        assert len(data) == k  # data tokens never collide with noise or markers
        np.testing.assert_array_equal(targets[seq_len:], data)
        assert data.min() >= 2 and data.max() < vocab
        assert MARKER not in ids[:seq_len]


def test_selective_copying_positions_vary_between_examples():
    spacings = {tuple(np.flatnonzero(selective_copying(example_rng(0, 0, i), 256, 16)[0][:256]))
                for i in range(50)}
    assert len(spacings) == 50  # a fixed (LTI) kernel cannot match every layout


@pytest.mark.parametrize("seq_len,vocab", [(3, 3), (256, 16), (1001, 16), (4096, 5)])
def test_induction_heads_answer_follows_the_first_trigger(seq_len, vocab):
    trigger = vocab - 1
    first_positions = set()
    for i in range(50):
        ids, targets = induction_heads(example_rng(1, 2, i), seq_len, vocab)
        assert ids.shape == targets.shape == (seq_len,)
        assert ids[-1] == trigger
        assert (ids == trigger).sum() == 2  # the trigger once in the body, once at the end
        assert ids.min() >= 0 and ids.max() <= trigger
        assert (targets[:-1] == IGNORE).all()
        assert targets[-1] == recover_induction(ids, trigger) != trigger
        first_positions.add(int(np.flatnonzero(ids == trigger)[0]))
    assert max(first_positions) <= seq_len - 3
    if seq_len > 100:
        assert max(first_positions) - min(first_positions) > seq_len // 4


def test_dataset_items_are_a_function_of_seed_epoch_and_index():
    a = SyntheticTask("selective-copy", 8, 64, n_tokens=4, seed=5)
    b = SyntheticTask("selective-copy", 8, 64, n_tokens=4, seed=5)
    c = SyntheticTask("selective-copy", 8, 64, n_tokens=4, seed=6)
    assert len(a) == 8 and a.length == 68
    item = a[3]
    assert item["ids"].dtype == item["targets"].dtype == torch.int64
    assert item["ids"].shape == (68,)
    assert torch.equal(item["ids"], b[3]["ids"])
    assert not torch.equal(item["ids"], a[4]["ids"])
    assert not torch.equal(item["ids"], c[3]["ids"])
    a.set_epoch(1)
    assert not torch.equal(item["ids"], a[3]["ids"])  # fresh examples every epoch
    a.set_epoch(0)
    assert torch.equal(item["ids"], a[3]["ids"])


def test_dataset_batches_with_the_default_collate():
    ds = SyntheticTask("induction-heads", 6, 50, seed=0)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["ids"].shape == batch["targets"].shape == (4, 50)
    ds.set_seq_len(80)
    assert ds[0]["ids"].shape == (80,) and ds.length == 80


@pytest.mark.parametrize("call", [
    lambda: selective_copying(example_rng(0, 0, 0), 10, 11),
    lambda: selective_copying(example_rng(0, 0, 0), 10, 0),
    lambda: selective_copying(example_rng(0, 0, 0), 10, 2, vocab_size=2),
    lambda: induction_heads(example_rng(0, 0, 0), 2),
    lambda: induction_heads(example_rng(0, 0, 0), 10, vocab_size=2),
    lambda: SyntheticTask("copying", 4, 10),
    lambda: SyntheticTask("induction-heads", 0, 10),
])
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()


def test_index_out_of_range():
    with pytest.raises(IndexError):
        SyntheticTask("induction-heads", 4, 10)[4]
