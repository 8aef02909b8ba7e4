"""Backbones and task models: recurrent = parallel, causality, generation, save/load."""

import json

import pytest
import torch

from mamba_bio_audio import MambaClassifier, MambaConfig, MambaLM
from mamba_bio_audio.errors import CheckpointError, ConfigError

CONFIGS = {
    "isotropic": dict(d_model=16, n_layer=2, d_state=4, vocab_size=12),
    "isotropic-mlp-lti": dict(d_model=16, n_layer=2, d_state=4, vocab_size=12, mlp_expand=2,
                              selective=False),
    "unet": dict(backbone="unet", d_model=8, n_layer=1, d_state=4, vocab_size=256,
                 unet_pool=[2, 3], mlp_expand=2),
}


def make_lm(name, seed=0):
    torch.manual_seed(seed)
    return MambaLM(MambaConfig(**CONFIGS[name])).eval()


def ids_for(model, b, L, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (b, L), generator=g)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_step_equals_forward(name):
    model = make_lm(name)
    ids = ids_for(model, 2, 36)
    with torch.no_grad():
        full = model(ids)
        state = model.allocate_state(2)
        steps = torch.stack([model.step(ids[:, t], state) for t in range(36)], dim=1)
    assert full.shape == (2, 36, model.config.vocab_size)
    torch.testing.assert_close(steps, full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["isotropic", "unet"])
def test_chunked_forward_with_state(name):
    """Parallel chunks and single steps can be mixed: the state carries everything."""
    model = make_lm(name)
    ids = ids_for(model, 2, 42)
    with torch.no_grad():
        full = model(ids)
        state = model.allocate_state(2)
        a = model(ids[:, :12], state)
        b = torch.stack([model.step(ids[:, t], state) for t in range(12, 18)], dim=1)
        c = model(ids[:, 18:], state)
    torch.testing.assert_close(torch.cat([a, b, c], 1), full, rtol=1e-4, atol=1e-5)
    for t in state_tensors(state):  # compact copies, no views into the sequence's activations
        assert t.dtype == torch.float32 and t.untyped_storage().nbytes() == t.numel() * 4


def state_tensors(state):
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, list):
        return [t for s in state for t in state_tensors(s)]
    if isinstance(state, int):  # a U-Net step counter
        return []
    return [t for v in vars(state).values() for t in state_tensors(v)]


@pytest.mark.parametrize("name", ["isotropic", "unet"])
@pytest.mark.parametrize("t", [0, 7, 12, 23])
def test_causal(name, t):
    model = make_lm(name)
    ids = ids_for(model, 1, 30 if name == "isotropic" else 36)
    changed = ids.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 1) % model.config.vocab_size
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=0)
    assert (a[:, t + 1:] - b[:, t + 1:]).abs().amax() > 1e-4


def test_unet_length_error():
    model = make_lm("unet")
    with pytest.raises(ConfigError, match="input length 10 is not a multiple of the U-Net pooling "
                                          r"product 6 \(unet_pool=\[2, 3\]\)"):
        model(torch.zeros(1, 10, dtype=torch.long))
    state = model.allocate_state(1)
    model.step(torch.zeros(1, dtype=torch.long), state)
    with pytest.raises(ValueError, match="at position 1, inside a pooling window of 6"):
        model(torch.zeros(1, 6, dtype=torch.long), state)


@pytest.mark.parametrize("name", ["isotropic", "unet"])
def test_generate_greedy_follows_forward(name):
    """Greedy tokens are the argmax of the parallel forward over the generated sequence."""
    model = make_lm(name)
    prompt = ids_for(model, 2, 8)  # not a multiple of the U-Net's 6: primes by forward + steps
    seen = []
    out = model.generate(prompt, 10, temperature=0, callback=lambda tok, i: seen.append(tok))
    assert out.shape == (2, 18) and torch.equal(out[:, :8], prompt) and len(seen) == 10
    with torch.no_grad():
        logits = model(out)
    assert torch.equal(out[:, 8:], logits[:, 7:17].argmax(-1))


def test_generate_sampling_is_seeded_and_checked():
    model = make_lm("isotropic")
    prompt = torch.tensor([1, 2, 3])
    a = model.generate(prompt, 12, temperature=1.0, top_k=5, top_p=0.9, seed=3)
    b = model.generate(prompt, 12, temperature=1.0, top_k=5, top_p=0.9, seed=3)
    assert a.shape == (15,) and torch.equal(a, b)
    assert int(a.max()) < model.config.vocab_size
    top1 = model.generate(prompt, 12, top_k=1, seed=4)
    assert torch.equal(top1, model.generate(prompt, 12, temperature=0))
    with pytest.raises(ValueError, match="top_p=0: expected a number in"):
        model.generate(prompt, 3, top_p=0)
    with pytest.raises(ValueError, match="prompt_ids"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"token ids in \[0, 12\)"):
        model.generate(torch.tensor([12]), 3)
    with pytest.raises(ValueError, match="cuda_graph=True: expected False for a model that is not"):
        model.generate(prompt, 3, cuda_graph=True)


@pytest.mark.parametrize("name", ["isotropic", "unet"])
def test_save_load_identical(tmp_path, name):
    model = make_lm(name)
    ids = ids_for(model, 2, 12)
    model.save_pretrained(tmp_path / "ckpt", extra_files={"tokenizer.json": {"type": "x"}})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json"]
    loaded = MambaLM.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    assert loaded.lm_head.weight is loaded.backbone.embedding.weight
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))
    assert MambaLM.read_extra(tmp_path / "ckpt", "tokenizer.json") == {"type": "x"}


def test_checkpoint_errors(tmp_path):
    model = make_lm("isotropic")
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        MambaLM.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty: missing config.json"):
        MambaLM.from_pretrained(tmp_path / "empty")
    model.save_pretrained(tmp_path / "lm")
    with pytest.raises(CheckpointError, match="holds a MambaLM checkpoint, not a MambaClassifier"):
        MambaClassifier.from_pretrained(tmp_path / "lm")
    meta = json.loads((tmp_path / "lm" / "config.json").read_text())
    meta["d_model"] = 32
    (tmp_path / "lm" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="weights do not fit the config"):
        MambaLM.from_pretrained(tmp_path / "lm")
    (tmp_path / "lm" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        MambaLM.from_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match="plain file name"):
        model.save_pretrained(tmp_path / "x", extra_files={"../a.json": {}})


@pytest.mark.parametrize("pooling", ["mean", "last", "max"])
@pytest.mark.parametrize("name", ["isotropic", "unet"])
def test_classifier_ignores_padding(tmp_path, pooling, name):
    lm = make_lm(name)
    clf = MambaClassifier.from_lm(lm, n_classes=3, pooling=pooling, class_names=["a", "b", "c"])
    for key, value in lm.backbone.state_dict().items():
        assert torch.equal(clf.backbone.state_dict()[key], value)
    clf.eval()
    ids = ids_for(lm, 2, 12)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 7:] = False  # right padding of the first sequence
    other = ids.clone()
    other[0, 7:] = (other[0, 7:] + 1) % lm.config.vocab_size
    with torch.no_grad():
        a, b = clf(ids, mask), clf(other, mask)
    assert a.shape == (2, 3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    clf.save_pretrained(tmp_path / "clf")
    loaded = MambaClassifier.from_pretrained(tmp_path / "clf").eval()
    assert loaded.config.class_names == ["a", "b", "c"]
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask), a)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling", ["mean", "last", "max"])
def test_right_padded_classifier_equals_unpadded(bidirectional, pooling):
    """With right padding and its mask, a padded sequence gets the logits of the bare one."""
    torch.manual_seed(0)
    clf = MambaClassifier(MambaConfig(**CONFIGS["isotropic"], bidirectional=bidirectional,
                                      n_classes=2, pooling=pooling)).eval()
    seq = torch.randint(0, 12, (1, 9))
    padded = torch.cat([seq, torch.full((1, 4), 4)], 1)
    mask = torch.ones_like(padded, dtype=torch.bool)
    mask[:, 9:] = False
    with torch.no_grad():
        torch.testing.assert_close(clf(padded, mask), clf(seq), rtol=1e-5, atol=1e-6)


def test_bidirectional_classifier_and_lm_errors():
    cfg = MambaConfig(**CONFIGS["isotropic"], bidirectional=True, n_classes=2)
    clf = MambaClassifier(cfg)
    assert clf(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 2)
    with pytest.raises(ConfigError, match="must be causal"):
        MambaLM(cfg)
    with pytest.raises(ConfigError, match="n_classes=0"):
        MambaClassifier(MambaConfig(**CONFIGS["isotropic"]))


def test_gradient_checkpointing_same_gradients():
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = MambaLM(MambaConfig(**CONFIGS["isotropic"], gradient_checkpointing=ckpt)).train()
        ids = ids_for(model, 2, 20)
        logits = model(ids[:, :-1]).flatten(0, 1)
        loss = torch.nn.functional.cross_entropy(logits, ids[:, 1:].flatten())
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for g0, g1 in zip(*grads):
        torch.testing.assert_close(g0, g1)


def test_unet_set_position_matches_stepping():
    """The counters that CUDA-graph replay sets directly are those that stepping leaves."""
    model = make_lm("unet")
    state = model.allocate_state(1)
    with torch.no_grad():
        for t in range(37):
            model.step(torch.tensor([t % 12]), state)
    counters = [state.pos, state.inner.pos]
    model.backbone.set_position(state, 0)
    model.backbone.set_position(state, 37)
    assert [state.pos, state.inner.pos] == counters == [37, 18]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(CONFIGS))
def test_cuda_forward_and_gradients_equal_cpu(name, monkeypatch):
    """On CUDA the mixer hands the Triton scan channels-last views (no copies); the logits and
    every parameter's gradient must still match the CPU path's (time-contiguous, torch scan)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cpu = make_lm(name).train()
    gpu = make_lm(name).train().cuda()
    ids = ids_for(cpu, 2, 96)
    results = []
    for model, x in ((cpu, ids), (gpu, ids.cuda())):
        logits = model(x)
        logits.float().pow(2).mean().backward()
        results.append((logits.detach().cpu(), {k: p.grad.cpu() for k, p in model.named_parameters()}))
    (l_cpu, g_cpu), (l_gpu, g_gpu) = results
    torch.testing.assert_close(l_gpu, l_cpu, rtol=1e-3, atol=1e-4)
    for k in g_cpu:
        torch.testing.assert_close(g_gpu[k], g_cpu[k], rtol=2e-3, atol=1e-5, msg=k)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["isotropic", "unet"])
def test_cuda_graph_generation_equals_eager(name):
    model = make_lm(name).cuda()
    prompt = ids_for(model, 3, 13).cuda()
    eager = model.generate(prompt, 40, temperature=0, cuda_graph=False)
    graphed = model.generate(prompt, 40, temperature=0, cuda_graph=True)
    assert torch.equal(eager, graphed)
    sampled = [model.generate(prompt, 40, top_k=5, seed=7, cuda_graph=g) for g in (False, True)]
    assert torch.equal(*sampled)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_feature_input_classifier_forward_step_and_save_load(tmp_path, bidirectional):
    """input_dim > 0: float frames through a Linear instead of the embedding; padding is
    ignored, the wrong kind of input is refused, and a checkpoint round-trips exactly."""
    torch.manual_seed(0)
    cfg = MambaConfig(d_model=16, n_layer=2, d_state=4, input_dim=6, n_classes=3,
                      bidirectional=bidirectional)
    clf = MambaClassifier(cfg).eval()
    assert not hasattr(clf.backbone, "embedding") and clf.backbone.input_proj.in_features == 6
    x = torch.randn(2, 10, 6)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, 7:] = False
    other = x.clone()
    other[0, 7:] = 5.0  # other values in the padding
    with torch.no_grad():
        logits = clf(x, mask)
        assert logits.shape == (2, 3)
        torch.testing.assert_close(clf(other, mask), logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(clf(x[:1, :7])[0], logits[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"reads 6 float features .*shape \(batch, length, 6\)"):
        clf(torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="got torch.float32 \\(2, 10, 5\\)"):
        clf(torch.randn(2, 10, 5))
    clf.save_pretrained(tmp_path / "clf")
    assert json.loads((tmp_path / "clf" / "config.json").read_text())["input_dim"] == 6
    loaded = MambaClassifier.from_pretrained(tmp_path / "clf").eval()
    assert loaded.config == cfg
    with torch.no_grad():
        assert torch.equal(loaded(x, mask), logits)
    if not bidirectional:  # recurrent mode takes one frame per step
        with torch.no_grad():
            state = clf.backbone.allocate_state(2)
            steps = torch.stack([clf.backbone.step(x[:, t], state) for t in range(10)], 1)
            torch.testing.assert_close(steps, clf.backbone(x), rtol=1e-4, atol=1e-5)


def test_token_model_refuses_floats_and_old_configs_load(tmp_path):
    clf = MambaClassifier(MambaConfig(**CONFIGS["isotropic"], n_classes=2))
    with pytest.raises(ValueError, match="need a model with model.input_dim > 0"):
        clf(torch.randn(2, 5, 3))
    clf.save_pretrained(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    del meta["input_dim"]  # a checkpoint written before the field existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    loaded = MambaClassifier.from_pretrained(tmp_path / "old")
    assert loaded.config.input_dim == 0 and hasattr(loaded.backbone, "embedding")
    with pytest.raises(ConfigError, match="float features .* are for classifiers"):
        MambaLM(MambaConfig(**CONFIGS["isotropic"], input_dim=4))
    with pytest.raises(ConfigError, match="model.input_dim=-1"):
        MambaConfig(input_dim=-1)
