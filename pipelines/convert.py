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

import sys
from pathlib import Path

from mamba_bio_audio.errors import CheckpointError, ConfigError, UserError

from .common.model_files import (DATA_FILE, TOKENIZER_FILE, add_tokenizer_argument, folder_extras,
                                 named_tokenizer)
from .training.checkpoint import atomic_save_dir

TOKENIZER_NAMES = ("dna", "mulaw")


def add_arguments(parser) -> None:
    parser.add_argument("src", metavar="SRC",
                        help="an LM checkpoint folder: ours, Hugging Face or mamba_ssm")
    parser.add_argument("--out", required=True, metavar="DST", help="the folder to write (new)")
    parser.add_argument("--to", default="ours", choices=("ours", "hf", "mamba_ssm"),
                        help="format of DST (default: ours)")
    add_tokenizer_argument(parser)


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
