"""Our MambaLM against transformers' MambaForCausalLM and a mamba_ssm-layout folder: the same
logits and greedy generations after conversion either way (tiny random models, CPU, fp32); the
`convert` command (round trips bit for bit, bad checkpoints refused in one line) and the commands
that read checkpoints from elsewhere."""

import json
import re
import shlex
from pathlib import Path

import pytest
import safetensors.torch
import torch
import transformers
from safetensors import safe_open
from transformers import MambaConfig as HFMambaConfig
from transformers import MambaForCausalLM

from mamba_bio_audio.cli import main as cli
from mamba_bio_audio.config import MambaConfig
from mamba_bio_audio.data import LONG_AUDIO_DIR, DNATokenizer, MuLaw
from mamba_bio_audio.errors import CheckpointError
from mamba_bio_audio.models import MambaClassifier, MambaLM
from mamba_bio_audio.models.convert import checkpoint_format, foreign_lm, save_foreign
from mamba_bio_audio.pipelines.common.model_files import save_tokenizer
from mamba_bio_audio.pipelines.common.run_config import DataConfig

transformers.logging.set_verbosity_error()
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
    # no special tokens: id 0 neither ends generation nor counts as padding
    assert theirs.generation_config.eos_token_id is None and theirs.config.pad_token_id is None
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


@pytest.mark.parametrize("layout", ["shards", "bin", "bare-model"])
def test_hf_weight_files(tmp_path, layout):
    """Sharded safetensors (model.safetensors.index.json), pytorch_model.bin, and a bare
    MambaModel's names (no "backbone." prefix, tied head) all give transformers' logits."""
    folder = tmp_path / "hf"
    theirs = hf_model()
    if layout == "shards":
        theirs.save_pretrained(folder, max_shard_size="2KB")
        assert (folder / "model.safetensors.index.json").is_file()
        assert len(list(folder.glob("model-*.safetensors"))) > 1
    else:
        theirs.save_pretrained(folder)
        (folder / "model.safetensors").unlink()
        weights = theirs.state_dict()
        if layout == "bare-model":
            weights = {k.removeprefix("backbone."): v for k, v in weights.items()
                       if k.startswith("backbone.")}
        torch.save(weights, folder / "pytorch_model.bin")
    max_logit_difference(MambaLM.from_pretrained(folder), theirs, ids(12))


def test_a_side_file_that_no_longer_fits_is_ignored(tmp_path):
    save_foreign(our_model(), tmp_path / "hf", "hf", {"tokenizer": DNATokenizer().to_dict()})
    side = tmp_path / "hf" / "mamba_bio_audio.json"
    edit_json(side, model={**json.loads(side.read_text())["model"], "d_state": 8})
    with pytest.warns(UserWarning, match="describes another model"):
        model = MambaLM.from_pretrained(tmp_path / "hf")
    assert model.config.vocab_size == 16 and model.config.d_state == 4


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


# ---- the convert command, and the other commands on folders from elsewhere ----


def run(argv, capsys) -> tuple[int, str]:
    """The console script in-process: (exit status, stderr)."""
    capsys.readouterr()
    try:
        rc = cli([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        rc = exc.code
    return rc, capsys.readouterr().err


def ours_folder(folder, model: MambaLM, tokenizer) -> None:
    model.save_pretrained(folder, extra_files=save_tokenizer(tokenizer, DataConfig(
        kind="genome" if isinstance(tokenizer, DNATokenizer) else "recordings")))


def same_folders(a, b) -> None:
    """Bit for bit: the same files, the same JSON bytes, the same tensors (dtype, shape, bits)
    and safetensors metadata. (The bytes of model.safetensors are not compared: safetensors
    writes its metadata in a hash-map order that changes from one process to the next.)"""
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for p in a.iterdir():
        if p.suffix != ".safetensors":
            assert p.read_bytes() == (b / p.name).read_bytes(), p.name
    with safe_open(str(a / "model.safetensors"), "pt") as fa, \
            safe_open(str(b / "model.safetensors"), "pt") as fb:
        assert fa.metadata() == fb.metadata() and sorted(fa.keys()) == sorted(fb.keys())
        for k in fa.keys():  # noqa: SIM118
            ta, tb = fa.get_tensor(k), fb.get_tensor(k)
            assert ta.dtype == tb.dtype and torch.equal(ta.view(torch.int32), tb.view(torch.int32))


@pytest.mark.parametrize("fmt", ["hf", "mamba_ssm"])
def test_round_trip_through_the_cli_is_bit_identical(tmp_path, capsys, fmt):
    ours = our_model(d_model=32, mlp_expand=4 if fmt == "mamba_ssm" else 0, tie_embeddings=False)
    ours_folder(tmp_path / "ours", ours, DNATokenizer())
    assert run(["convert", tmp_path / "ours", "--out", tmp_path / fmt, "--to", fmt], capsys)[0] == 0
    assert checkpoint_format(tmp_path / fmt) == fmt
    assert run(["convert", tmp_path / fmt, "--out", tmp_path / "back"], capsys)[0] == 0
    same_folders(tmp_path / "ours", tmp_path / "back")


def test_hf_to_ours_to_hf_keeps_transformers_logits(tmp_path, capsys):
    theirs = hf_model(tmp_path / "hf", vocab_size=16, tie_word_embeddings=False)
    assert run(["convert", tmp_path / "hf", "--out", tmp_path / "ours", "--tokenizer", "dna"],
               capsys)[0] == 0
    ours = MambaLM.from_pretrained(tmp_path / "ours")
    assert ours.config.vocab_size == 12 and ours.config.padded_vocab_size == 16
    assert json.loads((tmp_path / "ours" / "tokenizer.json").read_text())["type"] == "dna_char"
    max_logit_difference(ours, theirs, ids(12))
    assert run(["convert", tmp_path / "ours", "--out", tmp_path / "hf2", "--to", "hf"],
               capsys)[0] == 0
    again = MambaForCausalLM.from_pretrained(tmp_path / "hf2").eval()
    x = ids(16)
    with torch.no_grad():
        assert torch.equal(again(x).logits, theirs(x).logits)


def test_generate_asks_for_a_tokenizer_that_a_folder_lacks(tmp_path, capsys):
    hf_model(tmp_path / "hf")
    rc, err = run(["generate", "--model", tmp_path / "hf", "--length", "30", "--out",
                   tmp_path / "gen"], capsys)
    assert rc == 2 and "--tokenizer dna|mulaw" in err and not (tmp_path / "gen").exists()


TINY_TRAIN = ["train.steps=2", "train.eval_every=2", "train.batch_size=2",
              "train.warmup_steps=1", "train.progress=false"]


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    for key in [k for k, v in changes.items() if v is DELETE]:
        del data[key]
    path.write_text(json.dumps(data))


DELETE = object()


def edit_weights(folder, drop=(), add=None):
    path = folder / "model.safetensors"
    weights = safetensors.torch.load_file(str(path))
    for key in drop:
        del weights[key]
    weights.update(add or {})
    safetensors.torch.save_file(weights, str(path))


class Evil:  # a pickled object: torch.load(weights_only=True) must refuse to build it
    def __reduce__(self):
        return (print, ("this ran",))


def bad_hf(folder, **config):
    hf_model(folder)
    edit_json(folder / "config.json", **config)


def bad_ssm(folder, ssm_cfg=None, **config):
    write_mamba_ssm_folder(folder, hf_model(vocab_size=16), vocab_size=16, **config)
    if ssm_cfg:
        edit_json(folder / "config.json", ssm_cfg={**json.loads(
            (folder / "config.json").read_text())["ssm_cfg"], **ssm_cfg})


def evil_bin(folder):
    hf_model(folder)
    (folder / "model.safetensors").unlink()
    torch.save({"backbone.norm_f.weight": Evil()}, folder / "pytorch_model.bin")


def lm_folder(folder, **overrides):
    ours_folder(folder, our_model(**overrides), MuLaw() if overrides.get("vocab_size") == 256
                else DNATokenizer())


BAD = {  # name: (make the source folder, extra arguments, words the message must contain)
    "hf-layernorm": (lambda d: bad_hf(d, rms_norm=False), [], ["rms_norm=False", "LayerNorm"]),
    "hf-activation": (lambda d: bad_hf(d, hidden_act="gelu"), [], ["hidden_act='gelu'", "silu"]),
    "hf-unknown-key": (lambda d: bad_hf(d, mixer_rms_eps=1e-6), [], ["'mixer_rms_eps'"]),
    "hf-wrong-type": (lambda d: bad_hf(d, use_bias="yes"), [], ["bias='yes'", "bool"]),
    "hf-expand-fraction": (lambda d: bad_hf(d, expand=1.5), [], ["expand=1.5"]),
    "hf-intermediate-size": (lambda d: bad_hf(d, intermediate_size=40), [],
                             ["intermediate_size=40", "32"]),
    "hf-mamba2": (lambda d: bad_hf(d, model_type="mamba2"), [], ["model_type='mamba2'",
                                                                  "Mamba-2"]),
    "hf-d-conv-mismatch": (lambda d: bad_hf(d, conv_kernel=3), [],
                           ["conv1d.weight", "(32, 1, 4)", "(32, 1, 3)"]),
    "hf-missing-weight": (lambda d: (hf_model(d), edit_weights(
        d, drop=["backbone.layers.1.mixer.D"])), [], ["missing", "backbone.layers.1.mixer.D"]),
    "hf-unexpected-weight": (lambda d: (hf_model(d), edit_weights(
        d, add={"backbone.layers.2.norm.weight": torch.ones(16)})), [],
        ["unexpected", "backbone.layers.2.norm.weight"]),
    "hf-untied-head-differs": (lambda d: (hf_model(d), edit_weights(
        d, add={"lm_head.weight": torch.zeros(12, 16)})), [], ["lm_head.weight", "differs"]),
    "hf-no-weights": (lambda d: (hf_model(d), (d / "model.safetensors").unlink()), [],
                      ["no weights", "model.safetensors", "pytorch_model.bin"]),
    "hf-not-json": (lambda d: (hf_model(d), (d / "config.json").write_text("{model")), [],
                    ["config.json", "not valid json"]),
    "bin-with-code": (evil_bin, [], ["pytorch_model.bin", "unreadable weights",
                                     "weights_only=True"]),
    "ssm-mamba2": (lambda d: bad_ssm(d, ssm_cfg={"layer": "Mamba2"}), [],
                   ["ssm_cfg.layer='Mamba2'", "Mamba-2"]),
    "ssm-mamba2-key": (lambda d: bad_ssm(d, ssm_cfg={"headdim": 64}), [], ["ssm_cfg.headdim"]),
    "ssm-layernorm": (lambda d: bad_ssm(d, rms_norm=False), [], ["rms_norm=False", "LayerNorm"]),
    "ssm-attention": (lambda d: bad_ssm(d, attn_layer_idx=[1]), [], ["attn_layer_idx=[1]"]),
    "ssm-unknown-key": (lambda d: bad_ssm(d, norm_epsilon=1e-6), [], ["'norm_epsilon'"]),
    "ssm-bad-d-conv": (lambda d: bad_ssm(d, ssm_cfg={"d_conv": 0}), [], ["d_conv=0"]),
    "not-mamba": (lambda d: bad_hf(d, model_type="gpt2"), [], ["not a mamba lm checkpoint"]),
    "classifier": (lambda d: MambaClassifier(MambaConfig(d_model=16, n_layer=1, n_classes=2))
                   .save_pretrained(d), [], ["MambaClassifier"]),
    "to-hf-lti": (lambda d: lm_folder(d, selective=False), ["--to", "hf"],
                  ["model.selective=False", "cannot be written as hf"]),
    "to-hf-mlp": (lambda d: lm_folder(d, mlp_expand=2), ["--to", "hf"], ["model.mlp_expand=2"]),
    "to-ssm-unet": (lambda d: lm_folder(d, backbone="unet", unet_pool=[2]),
                    ["--to", "mamba_ssm"], ["model.backbone='unet'"]),
    "tokenizer-too-big": (lambda d: hf_model(d, vocab_size=16), ["--tokenizer", "mulaw"],
                          ["256 token ids", "16 rows"]),
    "tokenizer-mismatch": (lambda d: lm_folder(d, vocab_size=256), ["--tokenizer", "dna"],
                           ["vocabulary (256)", "12 ids"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_checkpoints_give_one_line_and_write_nothing(tmp_path, capsys, case):
    make, extra, words = BAD[case]
    src, out = tmp_path / "src", tmp_path / "out"
    make(src)
    rc, err = run(["convert", src, "--out", out, *extra], capsys)
    lines = err.strip().splitlines()
    print(f"{case}: exit {rc}: {lines[-1] if lines else ''}")  # the messages: pytest -rP
    assert rc == 2 and "Traceback" not in err and "this ran" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "disk full" not in lines[0]  # refused before anything is written
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no DST, no temp folder


def test_convert_never_overwrites(tmp_path, capsys):
    hf_model(tmp_path / "hf")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    rc, err = run(["convert", tmp_path / "hf", "--out", tmp_path / "out"], capsys)
    assert rc == 2 and "already exists" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]


def readme_commands() -> list[list[str]]:
    """The `mamba-bio-audio` lines of the README section "Using checkpoints from elsewhere"."""
    text = (Path(__file__).parents[2] / "README.md").read_text()
    section = text.split("## Using checkpoints from elsewhere\n")[1].split("\n## ")[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [shlex.split(line, comments=True)[1:] for block in blocks
            for line in block.splitlines() if line.startswith("mamba-bio-audio ")]


def test_readme_commands_run(tmp_path, capsys, monkeypatch):
    """Every command of the README section, in a folder holding what it names: a transformers
    DNA LM (hf-mamba), a mamba_ssm audio LM (ssm-mamba) and a recording (my_recordings/).
    The training commands get tiny sizes appended."""
    monkeypatch.chdir(tmp_path)
    theirs = hf_model(tmp_path / "hf-mamba", vocab_size=16)
    write_mamba_ssm_folder(tmp_path / "ssm-mamba", hf_model(vocab_size=256, seed=3), 256)
    (tmp_path / "my_recordings").mkdir()
    flac = next(LONG_AUDIO_DIR.glob("*.flac"))
    (tmp_path / "my_recordings" / flac.name).write_bytes(flac.read_bytes())
    commands = readme_commands()
    assert [c[0] for c in commands] == ["convert"] * 3 + ["generate", "classify", "finetune"]
    for argv in commands:
        if argv[0] == "classify":
            argv = [*argv, "--no-baseline", *TINY_TRAIN]
        elif argv[0] == "finetune":
            argv = [*argv, "data.seq_len=64", "data.val_items=2", "data.test_items=2", *TINY_TRAIN]
        rc, err = run(argv, capsys)
        assert rc == 0, (argv, err)
    again = MambaForCausalLM.from_pretrained(tmp_path / "hf-again").eval()
    x = ids(12)
    with torch.no_grad():
        assert torch.equal(again(x).logits[..., :12], theirs(x).logits[..., :12])
    assert checkpoint_format(tmp_path / "ssm-again") == "mamba_ssm"
    gen, cls, fine = ((tmp_path / "runs").glob(f"{c}-*") for c in ("generate", "classify",
                                                                   "finetune"))
    (gen,), (cls,), (fine,) = gen, cls, fine
    record = (gen / "generated.fa").read_text().split(">")[1]
    assert len("".join(record.splitlines()[1:])) == 1000
    clf = json.loads((cls / "checkpoints" / "best" / "config.json").read_text())
    assert clf["d_model"] == 16 and clf["n_classes"] == 3 and clf["vocab_size"] == 12
    assert json.loads((fine / "summary.json").read_text())["test_bits_per_sample_before"] > 0
    tuned = MambaLM.from_pretrained(fine / "checkpoints" / "last")
    assert tuned.config == MambaLM.from_pretrained(tmp_path / "ssm-mamba").config
