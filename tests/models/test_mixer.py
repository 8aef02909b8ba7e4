"""The Mamba mixer: initialisation, the LTI ablation, recurrent step, bidirectional branch."""

import math

import pytest
import torch
import torch.nn.functional as F

from mamba_bio_audio import MambaConfig, MambaLM
from mamba_bio_audio.modules import Mamba


def small(**kw):
    return MambaConfig(**{"d_model": 16, "n_layer": 2, "d_state": 4, **kw})


def test_init_statistics():
    torch.manual_seed(0)
    cfg = small(d_model=64, dt_min=2e-3, dt_max=0.05)
    ssm = Mamba(cfg, 64).ssm
    dt = F.softplus(ssm.dt_proj.bias)
    assert dt.min() >= 2e-3 * (1 - 1e-5) and dt.max() <= 0.05 * (1 + 1e-5)
    # log-uniform: the median of log(dt) is near the middle of [log dt_min, log dt_max]
    mid = (math.log(2e-3) + math.log(0.05)) / 2
    assert abs(dt.log().median().item() - mid) < 0.5
    A = -torch.exp(ssm.A_log)
    assert ssm.A_log.dtype == torch.float32
    assert torch.equal(A, -torch.arange(1, 5, dtype=torch.float32).expand(128, 4))
    assert torch.equal(ssm.D, torch.ones(128))
    assert ssm.A_log._no_weight_decay and ssm.D._no_weight_decay and ssm.dt_proj.bias._no_reinit
    bound = ssm.dt_rank ** -0.5
    assert ssm.dt_proj.weight.abs().max() <= bound


def test_model_init_keeps_dt_bias_and_rescales_out_proj():
    torch.manual_seed(0)
    cfg = small(d_model=64, n_layer=16)
    model = MambaLM(cfg)
    mixer = model.backbone.body[0].mixer
    assert F.softplus(mixer.ssm.dt_proj.bias).min() >= cfg.dt_min * (1 - 1e-5)  # not zeroed
    # kaiming_uniform(a=sqrt(5)) has std 1/sqrt(3 * fan_in); rescaled by 1/sqrt(n_layer)
    expected = 1 / math.sqrt(3 * mixer.d_inner) / math.sqrt(16)
    assert mixer.out_proj.weight.std().item() == pytest.approx(expected, rel=0.05)
    emb = model.backbone.embedding.weight
    assert emb.std().item() == pytest.approx(cfg.initializer_range, rel=0.2)
    assert model.lm_head.weight is emb


def test_lti_removes_input_dependence():
    torch.manual_seed(0)
    lti = Mamba(small(selective=False), 16).ssm
    sel = Mamba(small(), 16).ssm
    x1, x2 = torch.randn(2, 32, 10), torch.randn(2, 32, 10)
    for a, b in zip(lti.selection(x1), lti.selection(x2)):
        assert torch.equal(a, b)
    dt1, B1, _ = sel.selection(x1)
    dt2, B2, _ = sel.selection(x2)
    assert not torch.allclose(dt1, dt2) and not torch.allclose(B1, B2)
    assert not hasattr(lti, "x_proj") and lti.dt_bias._no_reinit


@pytest.mark.parametrize("selective", [True, False])
def test_mixer_step_equals_forward(selective):
    torch.manual_seed(0)
    mixer = Mamba(small(selective=selective), 16)
    u = torch.randn(2, 13, 16)
    with torch.no_grad():
        full = mixer(u)
        state = mixer.allocate_state(2)
        steps = torch.stack([mixer.step(u[:, t], state) for t in range(13)], dim=1)
    torch.testing.assert_close(steps, full, rtol=1e-4, atol=1e-5)


def test_forward_with_state_returns_final_state():
    torch.manual_seed(0)
    mixer = Mamba(small(), 16)
    u = torch.randn(2, 11, 16)
    with torch.no_grad():
        full = mixer(u)
        state = mixer.allocate_state(2)
        parts = [mixer(u[:, :2], state), mixer(u[:, 2:7], state), mixer(u[:, 7:], state)]
        step_state = mixer.allocate_state(2)
        for t in range(11):
            mixer.step(u[:, t], step_state)
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(state.ssm, step_state.ssm, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(state.conv, step_state.conv)
    for t in (state.ssm, state.conv):  # compact: no view keeping the sequence's buffers alive
        assert t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * 4


def test_bidirectional_sees_both_sides():
    torch.manual_seed(0)
    mixer = Mamba(small(bidirectional=True), 16)
    u = torch.randn(1, 12, 16)
    u2 = u.clone()
    u2[:, 8:] += 1.0
    with torch.no_grad():
        d = (mixer(u) - mixer(u2)).abs().amax(-1)[0]
    assert d[:8].min() > 0  # the past reads the future through the reversed branch
    with pytest.raises(ValueError, match="bidirectional"):
        mixer.step(u[:, 0], mixer.allocate_state(1))
