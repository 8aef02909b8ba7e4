"""Reverse-complement parameter sharing (model.rc_equivariant): equivariance of the backbone,
invariance of the classifier and the strand-pair LM heads, at random weights, on the CPU path and
under the Triton interpreter; same weights as a plain model; refused where it cannot hold."""

import pytest
import torch

from mamba_bio_audio import MambaClassifier, MambaConfig, MambaLM
from mamba_bio_audio.data import DNATokenizer
from mamba_bio_audio.errors import ConfigError

TOK = DNATokenizer()
COMP = torch.tensor(TOK.complement_ids)
TINY = dict(d_model=8, n_layer=2, d_state=4, vocab_size=12, rc_equivariant=True,
            complement=TOK.complement_ids)


def random_weights(model, seed=0):
    """Every parameter drawn at random (not the init, whose zeros and ones hide asymmetries)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return model.eval()


def dna(b, L, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(7, 12, (b, L), generator=g)  # A C G T N


def padded(ids, lengths):
    mask = torch.arange(ids.shape[1]) < torch.tensor(lengths)[:, None]
    return torch.where(mask, ids, TOK.pad_id), mask


@pytest.fixture
def triton_backend(monkeypatch):
    monkeypatch.setenv("MAMBA_BIO_AUDIO_SCAN_BACKEND", "triton")  # the interpreter on the CPU


def max_error(a, b):
    return float((a - b).abs().max())


@pytest.mark.parametrize("bidirectional", [False, True])
def test_backbone_equivariant(bidirectional):
    torch.manual_seed(0)
    model = random_weights(MambaClassifier(MambaConfig(**TINY, n_classes=3,
                                                       bidirectional=bidirectional)))
    ids = dna(2, 13)
    with torch.no_grad():
        h = model.backbone(ids)  # (b, L, 2d)
        h_rc = model.backbone(TOK.reverse_complement_ids(ids))
    assert h.shape == (2, 13, 16)
    print(f"backbone (bidirectional={bidirectional}, torch path): max |backbone(RC x) - "
          f"flip(backbone(x))| = {max_error(h_rc, h.flip(1).flip(2)):.2e}")
    assert max_error(h_rc, h.flip(1).flip(2)) < 1e-5
    assert max_error(h_rc, h) > 1e-2  # the property is not met by accident


def test_backbone_equivariant_with_padding():
    torch.manual_seed(0)
    model = random_weights(MambaClassifier(MambaConfig(**TINY, n_classes=3, bidirectional=True)))
    ids, mask = padded(dna(3, 11), [11, 7, 4])
    rc = TOK.reverse_complement_ids(ids, mask)
    with torch.no_grad():
        h, h_rc = model.backbone(ids, mask=mask), model.backbone(rc, mask=mask)
    for row, n in enumerate([11, 7, 4]):
        assert max_error(h_rc[row, :n], h[row, :n].flip(0).flip(1)) < 1e-5


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_classifier_invariant(pooling):
    torch.manual_seed(0)
    model = random_weights(MambaClassifier(MambaConfig(**TINY, n_classes=3, pooling=pooling)))
    ids, mask = padded(dna(3, 12, seed=2), [12, 9, 5])
    with torch.no_grad():
        logits = model(ids, mask=mask)
        logits_rc = model(TOK.reverse_complement_ids(ids, mask), mask=mask)
    print(f"classifier ({pooling} pooling, torch path): max |logits(RC x) - logits(x)| = "
          f"{max_error(logits_rc, logits):.2e}")
    assert max_error(logits_rc, logits) < 1e-5
    plain = MambaClassifier(MambaConfig(**{**TINY, "rc_equivariant": False}, n_classes=3,
                                        pooling=pooling))
    plain.load_state_dict(model.state_dict())  # the same weights fit a plain model ...
    with torch.no_grad():  # ... which is not invariant
        assert max_error(plain(TOK.reverse_complement_ids(ids, mask), mask=mask),
                         plain(ids, mask=mask)) > 1e-3


@pytest.mark.parametrize("triton", [False, True])
def test_lm_strand_pair_equivariant(triton, monkeypatch):
    if triton:  # the Triton kernels under the interpreter: one layer, short (it is slow)
        monkeypatch.setenv("MAMBA_BIO_AUDIO_SCAN_BACKEND", "triton")
    torch.manual_seed(0)
    model = random_weights(MambaLM(MambaConfig(**{**TINY, "n_layer": 2 - triton})))
    ids = dna(2, 10 - 4 * triton, seed=3)
    with torch.no_grad():
        both = model(ids, both_strands=True)  # (b, L, 2, V)
        both_rc = model(TOK.reverse_complement_ids(ids), both_strands=True)
        nxt = model(ids)
    assert both.shape == (2, ids.shape[1], 2, 12)
    # next base of RC(x) at t == complement-mapped previous base of x at L-1-t, and back
    print(f"LM ({'triton interpreter' if triton else 'torch path'}): max |next(RC x) - "
          f"comp(prev(x)) reversed| = "
          f"{max_error(both_rc[:, :, 0], both.flip(1)[:, :, 1][..., COMP]):.2e}")
    assert max_error(both_rc[:, :, 0], both.flip(1)[:, :, 1][..., COMP]) < 1e-5
    assert max_error(both_rc[:, :, 1], both.flip(1)[:, :, 0][..., COMP]) < 1e-5
    assert max_error(nxt, both[:, :, 0]) < 1e-5


def test_triton_backbone_and_classifier(triton_backend):
    """Under the Triton interpreter (one bidirectional layer, short padded rows: it is slow): the
    backbone's output, captured on the way, is equivariant, and the logits are invariant."""
    torch.manual_seed(0)
    model = random_weights(MambaClassifier(MambaConfig(**{**TINY, "n_layer": 1}, n_classes=3,
                                                       bidirectional=True)))
    hidden = []
    model.backbone.register_forward_hook(lambda m, args, out: hidden.append(out))
    ids, mask = padded(dna(2, 7, seed=5), [7, 4])
    with torch.no_grad():
        logits = model(ids, mask=mask)
        logits_rc = model(TOK.reverse_complement_ids(ids, mask), mask=mask)
    h, h_rc = hidden
    print(f"triton interpreter: backbone error {max_error(h_rc[0], h[0].flip(0).flip(1)):.2e}, "
          f"classifier error {max_error(logits_rc, logits):.2e}")
    for row, n in enumerate([7, 4]):
        assert max_error(h_rc[row, :n], h[row, :n].flip(0).flip(1)) < 1e-5
    assert max_error(logits_rc, logits) < 1e-5 and max_error(h_rc, h) > 1e-2


def test_lm_is_causal_and_steps():
    """The next-base head reads only the past, so generation runs it step by step."""
    torch.manual_seed(0)
    model = random_weights(MambaLM(MambaConfig(**TINY)))
    ids = dna(2, 9, seed=4)
    changed = ids.clone()
    changed[:, 6:] = 17 - changed[:, 6:]  # A<->T, C<->G after position 5
    with torch.no_grad():
        a, b = model(ids), model(changed)
        state = model.allocate_state(2)
        steps = torch.stack([model.step(ids[:, t], state) for t in range(9)], 1)
    assert max_error(a[:, :6], b[:, :6]) == 0 and max_error(a[:, 6:], b[:, 6:]) > 1e-3
    assert max_error(steps, a) < 1e-4
    out = model.generate(ids[:, :3], 5, seed=0)
    assert out.shape == (2, 8)


def test_same_checkpoint_format(tmp_path):
    torch.manual_seed(0)
    model = random_weights(MambaClassifier(MambaConfig(**TINY, n_classes=2)))
    plain = MambaClassifier(MambaConfig(**{**TINY, "rc_equivariant": False}, n_classes=2))
    assert model.state_dict().keys() == plain.state_dict().keys()
    model.save_pretrained(tmp_path / "m")
    back = MambaClassifier.from_pretrained(tmp_path / "m")
    ids = dna(2, 8)
    assert back.config.rc_equivariant and back.config.complement == TOK.complement_ids
    with torch.no_grad():
        torch.testing.assert_close(back(ids), model(ids))


@pytest.mark.parametrize("fields, match", [
    (dict(backbone="unet", d_model=8, unet_pool=[2]), "isotropic"),
    (dict(input_dim=4), "isotropic"),
    (dict(n_classes=2, pooling="last"), "pooling='last'"),
    (dict(complement=[1, 2, 0, *range(3, 12)]), "own inverse"),
    (dict(complement=[0, 1, 2]), "own inverse"),
])
def test_refused(fields, match):
    with pytest.raises(ConfigError, match=match):
        MambaConfig(**{**TINY, **fields})


def test_needs_a_complement_and_a_causal_lm():
    with pytest.raises(ConfigError, match="model.complement"):
        MambaLM(MambaConfig(**{**TINY, "complement": None}))
    with pytest.raises(ConfigError, match="must be causal"):
        MambaLM(MambaConfig(**TINY, bidirectional=True))
