"""Run configs: every built-in config loads and names its command; overrides and their errors."""

import pytest
from mamba_bio_audio.pipelines.common.run_config import (
    RUN_COMMANDS,
    builtin_configs,
    first_comment,
    load_run_config,
)

from mamba_bio_audio.cli import main as cli
from mamba_bio_audio.config import load_yaml
from mamba_bio_audio.errors import ConfigError

DEFAULTS = {"pretrain_dna", "classify_species", "classify_splice", "classify_digits",
            "pretrain_audio", "finetune_audio"}
PAPER_SIZED = {"pretrain_hg38", "classify_great_apes", "pretrain_sc09", "pretrain_youtubemix"}


def test_every_builtin_config_loads_and_starts_with_its_command():
    configs = builtin_configs()
    assert DEFAULTS | PAPER_SIZED <= set(configs)
    for name, path in configs.items():
        command = load_yaml(path)["command"]
        if command in RUN_COMMANDS:
            assert load_run_config(path, command=command).command == command
        comment = first_comment(path)
        assert comment.startswith(f"mamba-bio-audio {command} "), (name, comment)
        assert f"--config {name}" in comment, (name, comment)


def test_paper_sized_configs_warm_up_the_sequence_length():
    for name in ("pretrain_hg38", "classify_great_apes", "pretrain_youtubemix"):
        cfg = load_run_config(name)
        stages = cfg.train.seq_len_stages
        assert len(stages) >= 3 and stages[-1][1] == cfg.data.seq_len >= 131072, name
        assert [s[1] for s in stages] == sorted(s[1] for s in stages)


def test_overrides_are_typed_and_applied():
    cfg = load_run_config("pretrain_dna", ["model.d_model=96", "train.lr=1e-3",
                                           "train.seq_len_stages=[[0, 128], [5, 256]]"])
    assert cfg.model.d_model == 96 and cfg.train.lr == 1e-3
    assert cfg.train.seq_len_stages == [[0, 128], [5, 256]]


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "valid keys here are steps, batch_size"),
    ("model.d_model=wide", "model.d_model='wide': expected int"),
    ("data.kind=protein", "data.kind='protein': expected one of genome"),
    ("train.precision=fp8", "train.precision must be auto, bf16 or fp32"),
    ("nosection.x=1", "sections here are model, data, train"),
    ("train.steps", "expected key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_run_config("pretrain_dna", [override])


def test_config_for_another_command_is_refused():
    with pytest.raises(ConfigError, match="is for `classify`, not `pretrain`"):
        load_run_config("classify_splice", [], command="pretrain")


def test_cli_configs_lists_and_prints(capsys):
    assert cli(["configs"]) == 0
    listing = capsys.readouterr().out
    for name in DEFAULTS | PAPER_SIZED:
        assert name in listing
    assert cli(["configs", "classify_splice"]) == 0
    assert "kind: splice" in capsys.readouterr().out


def test_cli_reports_config_errors_in_one_line(capsys):
    assert cli(["pretrain", "--config", "no_such_config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --config no_such_config") and "\n" not in err
    assert cli(["classify", "model.n_layr=2"]) == 2
    assert "valid keys here are d_model, n_layer" in capsys.readouterr().err


def test_the_bundled_audio_config_uses_every_clip_without_a_warning():
    """pretrain_audio's window fits every bundled FSDD clip, so its default run skips none and
    warns of nothing (with 2,048 samples it skipped 192 of them, with three warnings a run)."""
    import warnings

    from mamba_bio_audio.data import FSDD_DIR
    from mamba_bio_audio.data.recordings import find_audio_files
    from mamba_bio_audio.pipelines.common.datasets import lm_datasets

    cfg = load_run_config("pretrain_audio", ["data.val_items=1", "data.test_items=1"], "pretrain")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = lm_datasets(cfg.data)
    used = sum(len(s.regions) for s in (data.train, data.val, data.test))
    assert used == len(find_audio_files(FSDD_DIR)) == 3000
