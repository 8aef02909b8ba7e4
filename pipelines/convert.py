"""`mamba-bio-audio convert`: Mamba LM checkpoints between our format, Hugging Face and mamba_ssm.

    mamba-bio-audio convert hf-mamba/ --out ours-mamba/ --tokenizer dna    # to ours (default)
    mamba-bio-audio convert runs/pretrain-X/checkpoints/best --out hf/ --to hf
    mamba-bio-audio convert runs/pretrain-X/checkpoints/best --out ssm/ --to mamba_ssm

SRC's format is read from its config.json (see `mamba_bio_audio.models.convert`). DST is written
into a temporary folder and renamed into place (`checkpoint.atomic_save_dir`), so it is complete
or absent; an existing non-empty DST is refused. `model_tokenizer` gives the tokenizer of any
LM folder to the commands that need one (generate).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mamba_bio_audio.errors import CheckpointError, ConfigError, UserError

from .checkpoint import atomic_save_dir
from .tasks import DATA_FILE, TOKENIZER_FILE

TOKENIZER_NAMES = ("dna", "mulaw")


def add_arguments(parser) -> None:
    parser.add_argument("src", metavar="SRC",
                        help="an LM checkpoint folder: ours, Hugging Face or mamba_ssm")
    parser.add_argument("--out", required=True, metavar="DST", help="the folder to write (new)")
    parser.add_argument("--to", default="ours", choices=("ours", "hf", "mamba_ssm"),
                        help="format of DST (default: ours)")
    add_tokenizer_argument(parser)


def add_tokenizer_argument(parser) -> None:
    parser.add_argument("--tokenizer", default=None, choices=TOKENIZER_NAMES,
                        help="the tokenizer of a checkpoint from elsewhere (which has none of "
                             "ours): dna (12 ids) or mulaw (256 levels)")


def named_tokenizer(name: str):
    from mamba_bio_audio import data as mdata

    return mdata.DNATokenizer() if name == "dna" else mdata.MuLaw()


def folder_extras(directory, fmt: str) -> dict:
    """The tokenizer and data settings that an LM folder carries: {"tokenizer": dict,
    "data_config": dict}, each only if present (ours: tokenizer.json and data_config.json; the
    other formats: the side file written by `convert`)."""
    from mamba_bio_audio.models.convert import (TO_CONFIG, read_config_json,
                                                read_side_file)

    directory = Path(directory)
    if fmt == "ours":
        files = {"tokenizer": directory / TOKENIZER_FILE, "data_config": directory / DATA_FILE}
        return {k: json.loads(p.read_text()) for k, p in files.items() if p.is_file()}
    config = TO_CONFIG[fmt](read_config_json(directory), str(directory / "config.json"))
    side = read_side_file(directory, fmt, config)
    return {k: side[k] for k in ("tokenizer", "data_config") if side.get(k) is not None}


def model_tokenizer(model_dir, name: str = None):
    """The tokenizer for an LM folder: `name` (dna|mulaw) if given, else the folder's own.

    Raises:
        CheckpointError: no such folder, or no name and the folder carries no tokenizer of ours.
    """
    from mamba_bio_audio import data as mdata
    from mamba_bio_audio.models.convert import checkpoint_format

    if not Path(model_dir).is_dir():
        raise CheckpointError(f"{model_dir}: no such checkpoint folder")
    if name is not None:
        return named_tokenizer(name)
    fmt = checkpoint_format(model_dir) or "ours"
    tokenizer = folder_extras(model_dir, fmt).get("tokenizer")
    if tokenizer is None:
        what = {"hf": "a Hugging Face", "mamba_ssm": "a mamba_ssm"}.get(fmt, "this")
        raise CheckpointError(f"{model_dir}: {what} checkpoint carries no tokenizer of ours "
                              f"({TOKENIZER_FILE}); name one with --tokenizer "
                              f"{'|'.join(TOKENIZER_NAMES)}")
    return mdata.tokenizer_from_dict(tokenizer)


def model_data_config(model_dir) -> dict:
    """The `data:` settings saved with an LM folder of any format ({} when there are none)."""
    from mamba_bio_audio.models.convert import checkpoint_format

    return folder_extras(model_dir, checkpoint_format(model_dir) or "ours").get("data_config", {})


def main(args) -> int:
    from mamba_bio_audio.models import MambaLM
    from mamba_bio_audio.models.convert import (FROM_CONFIG, checkpoint_format, read_config_json,
                                                save_foreign)

    src, out = Path(args.src), Path(args.out)
    fmt = checkpoint_format(src)
    if fmt is None:
        if not src.is_dir():
            raise CheckpointError(f"{src}: no such checkpoint folder")
        read_config_json(src)  # names a missing or unreadable config.json
        raise CheckpointError(f"{src}/config.json: not a Mamba LM checkpoint; expected ours "
                              "(model_type MambaLM), Hugging Face (model_type 'mamba') or "
                              "mamba_ssm (d_model, n_layer, ssm_cfg)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: already exists and is not empty; choose a new folder "
                        "(convert never overwrites)")
    extras = folder_extras(src, fmt)
    if args.tokenizer:
        extras["tokenizer"] = named_tokenizer(args.tokenizer).to_dict()
    vocab = None
    if "tokenizer" in extras:
        from mamba_bio_audio import data as mdata

        vocab = mdata.tokenizer_from_dict(extras["tokenizer"]).vocab_size
    model = MambaLM.from_pretrained(src, vocab_size=vocab)
    if vocab is not None and vocab != model.config.vocab_size:
        raise CheckpointError(f"{src}: the model's vocabulary ({model.config.vocab_size}) does "
                              f"not match the tokenizer's ({vocab} ids)")
    if args.to != "ours":
        try:  # refuses what the format cannot hold, before anything is written
            FROM_CONFIG[args.to](model.config)
        except ConfigError as err:
            raise CheckpointError(f"{src}: {err}") from None

    def write(tmp: Path) -> None:
        if args.to == "ours":
            files = {TOKENIZER_FILE: extras.get("tokenizer"), DATA_FILE: extras.get("data_config")}
            model.save_pretrained(tmp, extra_files={k: v for k, v in files.items() if v})
        else:
            save_foreign(model, tmp, args.to, extras)

    atomic_save_dir(out, write)
    print(f"convert: {src} ({fmt}) -> {out} ({args.to}): {model.config.n_layer} layers of width "
          f"{model.config.d_model}, vocabulary {model.config.vocab_size}, "
          f"{model.num_parameters():,} parameters", file=sys.stderr)
    return 0
