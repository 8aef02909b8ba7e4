"""Our MambaLM against transformers' MambaForCausalLM and a mamba_ssm-layout folder: the same
logits and greedy generations after conversion either way (tiny random models, CPU, fp32)."""

import json

import pytest
import torch
import transformers
from transformers import MambaConfig as HFMambaConfig
from transformers import MambaForCausalLM

from mamba_bio_audio.config import MambaConfig
from mamba_bio_audio.errors import CheckpointError
from mamba_bio_audio.models import MambaLM
from mamba_bio_audio.models.convert import checkpoint_format, foreign_lm, save_foreign

transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
RTOL = 1e-5  # of the largest logit, fp32 (measured: ~1e-6 of logits up to ~5; printed by
# test_logits_and_greedy_generation_match_transformers with pytest -s)


def perturb(model, seed=0):
    """Random values in every weight (norms, D, biases too), so that a mapping that mixes up two
    tensors of one shape shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def hf_model(folder=None, seed=0, **overrides) -> MambaForCausalLM:
    """A small random transformers Mamba LM, saved into `folder` if given."""
    settings = dict(vocab_size=12, hidden_size=16, state_size=4, num_hidden_layers=2)
    torch.manual_seed(seed)
    model = perturb(MambaForCausalLM(HFMambaConfig(**{**settings, **overrides})), seed).eval()
    if folder is not None:
        model.save_pretrained(folder)
    return model


def our_model(seed=0, **overrides) -> MambaLM:
    settings = dict(d_model=16, n_layer=2, d_state=4, vocab_size=12)
    torch.manual_seed(seed)
    return perturb(MambaLM(MambaConfig(**{**settings, **overrides})), seed).eval()


def ids(vocab, batch=3, length=40, seed=1):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def max_logit_difference(ours: MambaLM, theirs, x) -> float:
    """max |ours - theirs| over the logits of x, checked against RTOL * max |logit|."""
    a, b = ours(x), theirs(x).logits[..., : ours.config.vocab_size]
    assert a.shape == b.shape
    diff = float((a - b).abs().max())
    assert diff <= RTOL * max(1.0, float(b.abs().max())), diff
    return diff


def greedy(model, prompt, n=24):
    if isinstance(model, MambaLM):
        return model.generate(prompt, n, temperature=0)
    model.generation_config.eos_token_id = None  # the random model's token 0 would stop it
    # every prompt token is real (else transformers reads the pad id 0 as padding)
    return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                          do_sample=False)


HF_VARIANTS = {
    "tied": {},
    "untied-biases-odd-sizes": dict(vocab_size=13, hidden_size=24, tie_word_embeddings=False,
                                    use_bias=True, use_conv_bias=False, residual_in_fp32=False,
                                    time_step_rank=3, conv_kernel=3, expand=3,
                                    layer_norm_epsilon=1e-3, state_size=5),
}


@pytest.mark.parametrize("variant", HF_VARIANTS)
def test_logits_and_greedy_generation_match_transformers(tmp_path, variant):
    theirs = hf_model(tmp_path / "hf", **HF_VARIANTS[variant])
    assert checkpoint_format(tmp_path / "hf") == "hf"
    ours = MambaLM.from_pretrained(tmp_path / "hf").eval()
    diff = max_logit_difference(ours, theirs, ids(theirs.config.vocab_size))
    print(f"{variant}: max |logit difference| vs transformers = {diff:.3g}")
    prompt = ids(theirs.config.vocab_size, batch=2, length=6, seed=2)
    out = greedy(ours, prompt)
    assert torch.equal(out, greedy(theirs, prompt))
    assert len(set(out[:, 6:].flatten().tolist())) > 1  # not one token repeated


def test_transformers_reads_our_model_written_as_hf(tmp_path):
    ours = our_model(vocab_size=16, tie_embeddings=False, bias=True)
    save_foreign(ours, tmp_path / "hf", "hf")
    theirs = MambaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    max_logit_difference(ours, theirs, ids(16))
    prompt = ids(16, batch=2, length=5, seed=3)
    assert torch.equal(greedy(ours, prompt), greedy(theirs, prompt))


def test_padded_vocabulary_to_hf_keeps_the_padding_rows(tmp_path):
    ours = our_model()  # vocab 12 padded to 16 rows
    save_foreign(ours, tmp_path / "hf", "hf")
    theirs = MambaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert theirs.config.vocab_size == 16 and theirs.config.tie_word_embeddings
    max_logit_difference(ours, theirs, ids(12))
    back = MambaLM.from_pretrained(tmp_path / "hf")  # the side file restores vocab_size 12
    assert back.config == ours.config
    # without it, all 16 rows are the vocabulary, or as many as a tokenizer names
    (tmp_path / "hf" / "mamba_bio_audio.json").unlink()
    assert MambaLM.from_pretrained(tmp_path / "hf").config.vocab_size == 16
    narrowed = MambaLM.from_pretrained(tmp_path / "hf", vocab_size=12)
    assert narrowed.config.vocab_size == 12 and narrowed.config.padded_vocab_size == 16
    with pytest.raises(CheckpointError, match="17 token ids .* only 16 rows"):
        MambaLM.from_pretrained(tmp_path / "hf", vocab_size=17)


def write_mamba_ssm_folder(folder, theirs: MambaForCausalLM, vocab_size: int, **config):
    """A mamba_ssm MambaLMHeadModel folder, from its documented names (config_mamba.py and the
    state dict of MambaLMHeadModel: backbone.embedding, backbone.layers.{i}.mixer.*,
    backbone.norm_f, lm_head; tied weights saved under both names), holding the weights of a
    transformers model (whose names differ only in "embeddings")."""
    folder.mkdir()
    hf = theirs.config
    cfg = {"d_model": hf.hidden_size, "n_layer": hf.num_hidden_layers, "vocab_size": vocab_size,
           "ssm_cfg": {"d_state": hf.state_size, "d_conv": hf.conv_kernel, "expand": hf.expand},
           "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
           "pad_vocab_size_multiple": 8, **config}
    (folder / "config.json").write_text(json.dumps(cfg))
    weights = {k.replace("backbone.embeddings.", "backbone.embedding."): v.clone()
               for k, v in theirs.state_dict().items()}
    weights["lm_head.weight"] = weights["backbone.embedding.weight"]
    torch.save(weights, folder / "pytorch_model.bin")
    return weights


def test_mamba_ssm_folder_matches_transformers(tmp_path):
    theirs = hf_model(vocab_size=16)  # mamba_ssm pads vocab_size 10 to 16 rows
    write_mamba_ssm_folder(tmp_path / "ssm", theirs, vocab_size=10)
    assert checkpoint_format(tmp_path / "ssm") == "mamba_ssm"
    ours = MambaLM.from_pretrained(tmp_path / "ssm").eval()
    assert ours.config.vocab_size == 10 and ours.config.padded_vocab_size == 16
    max_logit_difference(ours, theirs, ids(10))


def test_mamba_ssm_writer_uses_the_documented_names(tmp_path):
    theirs = hf_model(vocab_size=16)
    written = write_mamba_ssm_folder(tmp_path / "ssm", theirs, vocab_size=16)
    save_foreign(foreign_lm(tmp_path / "ssm"), tmp_path / "again", "mamba_ssm")
    again = torch.load(tmp_path / "again" / "pytorch_model.bin", weights_only=True)
    assert sorted(again) == sorted(written)
    assert all(torch.equal(again[k], written[k]) for k in written)


def test_mamba_ssm_mlp_blocks_round_trip(tmp_path):
    ours = our_model(d_model=32, mlp_expand=4)  # MLP width 128, as mamba_ssm's GatedMLP rounds
    save_foreign(ours, tmp_path / "ssm", "mamba_ssm", {})
    cfg = json.loads((tmp_path / "ssm" / "config.json").read_text())
    assert cfg["d_intermediate"] == 128
    names = torch.load(tmp_path / "ssm" / "pytorch_model.bin", weights_only=True)
    assert {"backbone.layers.1.norm2.weight", "backbone.layers.1.mlp.fc1.weight",
            "backbone.layers.1.mlp.fc2.weight"} <= set(names)
    (tmp_path / "ssm" / "mamba_bio_audio.json").unlink()  # from config.json alone
    back = MambaLM.from_pretrained(tmp_path / "ssm").eval()
    x = ids(12)
    with torch.no_grad():
        assert torch.equal(back(x), ours(x))


@pytest.mark.parametrize("fmt", ["hf", "mamba_ssm"])
def test_what_the_formats_lack_is_refused_before_writing(tmp_path, fmt):
    for overrides, key in ((dict(selective=False), "selective"),
                           (dict(backbone="unet", unet_pool=[2]), "backbone"),
                           (dict(norm_eps=1e-3), "norm_eps" if fmt == "mamba_ssm" else None),
                           (dict(mlp_expand=2), "mlp_expand")):
        if key is None:
            continue
        with pytest.raises(ValueError, match=f"model.{key}"):
            save_foreign(our_model(**overrides), tmp_path / f"{fmt}-{key}", fmt)
        assert not (tmp_path / f"{fmt}-{key}").exists()
