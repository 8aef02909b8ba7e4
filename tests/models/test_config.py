"""MambaConfig: presets, validation, JSON round trip; the generic nested-config helpers."""

from dataclasses import dataclass, field
from typing import Optional

import pytest

from mamba_bio_audio import MambaConfig, MambaLM
from mamba_bio_audio.config import PRESETS, apply_overrides, from_dict, load_yaml, to_dict
from mamba_bio_audio.errors import ConfigError


@dataclass
class Train:
    lr: float = 1e-3
    steps: int = 10
    stages: list[int] = field(default_factory=lambda: [128, 256])


@dataclass
class Run:
    model: MambaConfig = field(default_factory=MambaConfig)
    train: Train = field(default_factory=Train)
    name: Optional[str] = None


def test_json_round_trip(tmp_path):
    cfg = MambaConfig.preset("audio-unet", n_classes=2, class_names=["no", "yes"], dt_rank=5)
    cfg.save_json(tmp_path / "c.json")
    assert MambaConfig.load_json(tmp_path / "c.json") == cfg
    assert MambaConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name,expected", [("dna-small", 1.4e6), ("audio-unet", 6.0e6)])
def test_preset_parameter_counts(name, expected):
    n = MambaLM(MambaConfig.preset(name)).num_parameters()
    assert abs(n - expected) / expected <= 0.10, n


def test_presets_build():
    for name in PRESETS:
        assert MambaConfig.preset(name).to_dict()["d_model"] > 0
    with pytest.raises(ConfigError, match="dna-small"):
        MambaConfig.preset("nope")


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_layer=0), r"model\.n_layer=0: expected a positive integer"),
    (dict(d_model=-4), r"model\.d_model=-4"),
    (dict(backbone="unet", d_model=33), r"model\.d_model=33: expected an even width"),
    (dict(backbone="unet", unet_pool=[4, 1]), r"model\.unet_pool=\[4, 1\]"),
    (dict(backbone="transformer"), r"model\.backbone='transformer': expected one of isotropic"),
    (dict(dt_min=0.2, dt_max=0.1), r"model\.dt_min=0.2"),
    (dict(dt_rank="big"), r"model\.dt_rank='big'"),
    (dict(pooling="sum"), r"model\.pooling='sum'"),
    (dict(n_classes=2, class_names=["a"]), r"model\.class_names"),
    (dict(backbone="unet", bidirectional=True), r"causal only"),
])
def test_impossible_configs(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MambaConfig(**kwargs)


def test_padded_vocab_and_dt_rank():
    cfg = MambaConfig(d_model=40, vocab_size=12)
    assert cfg.padded_vocab_size == 16 and cfg.dt_rank_for(cfg.d_model) == 3


def test_from_dict_checks_keys_and_types():
    run = from_dict(Run, {"model": {"d_model": 64}, "train": {"lr": "1e-4", "stages": [1, 2]}})
    assert run.model.d_model == 64 and run.train.lr == 1e-4 and run.train.stages == [1, 2]
    with pytest.raises(ConfigError, match=r"run\.model\.d_modle: unknown key; valid keys are d_"):
        from_dict(Run, {"model": {"d_modle": 64}}, where="run")
    with pytest.raises(ConfigError, match=r"train\.steps=1\.5: expected int"):
        from_dict(Run, {"train": {"steps": 1.5}}, where="")
    with pytest.raises(ConfigError, match=r"train\.stages\[1\]='x': expected int"):
        from_dict(Run, {"train": {"stages": [1, "x"]}}, where="")
    with pytest.raises(ConfigError, match=r"model\.tie_embeddings=1: expected bool"):
        from_dict(Run, {"model": {"tie_embeddings": 1}}, where="")
    with pytest.raises(ConfigError, match=r"train=3: expected a mapping"):
        from_dict(Run, {"train": 3}, where="")
    assert to_dict(run)["train"] == {"lr": 1e-4, "steps": 10, "stages": [1, 2]}


def test_apply_overrides():
    run = apply_overrides(Run(), ["model.d_model=128", "train.lr=2e-3", "model.unet_pool=[2, 8]",
                                  "name=exp1", "model.dt_rank=4"])
    assert (run.model.d_model, run.train.lr, run.model.unet_pool, run.name,
            run.model.dt_rank) == (128, 2e-3, [2, 8], "exp1", 4)
    with pytest.raises(ConfigError, match="unknown key model.d_modl; valid keys here are d_model"):
        apply_overrides(Run(), ["model.d_modl=3"])
    with pytest.raises(ConfigError, match=r"model\.d_model='abc': expected int"):
        apply_overrides(Run(), ["model.d_model=abc"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(Run(), ["model.d_model"])
    with pytest.raises(ConfigError, match="name is not a section; sections here are model, train"):
        apply_overrides(Run(), ["name.x.y=1"])
    with pytest.raises(ConfigError, match=r"model\.n_layer=0: expected a positive integer"):
        apply_overrides(Run(), ["model.n_layer=0"])


def test_apply_overrides_leaves_original():
    run = Run()
    apply_overrides(run, ["model.d_model=64"])
    assert run.model.d_model == MambaConfig().d_model


def test_load_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {d_model: 64}\ntrain:\n  lr: 1e-3\n")
    assert from_dict(Run, load_yaml(path)).train.lr == 1e-3
    assert load_yaml({"a": 1}) == {"a": 1}
    with pytest.raises(ConfigError, match="no such config file"):
        load_yaml(tmp_path / "missing.yaml")
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(path)
    path.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(path)
