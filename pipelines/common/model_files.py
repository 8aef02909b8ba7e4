"""The files beside a model, and finding the model folder an option names.

A checkpoint folder of ours holds `config.json` and `model.safetensors` (written by
`save_pretrained`) and, beside them, `tokenizer.json` (the tokenizer's settings) and
`data_config.json` (the `data:` section it was trained with: window length, sample rate, audio
front-end). Every command that reads a model gets them here, so the tokenizer and the front-end
settings are decided once, by what was saved. Folders in the Hugging Face or mamba_ssm layout
carry them in a side file written by `convert` (or not at all: then `--tokenizer` names one).

Light on purpose (no torch at import time).
"""

from __future__ import annotations

import json
from pathlib import Path

from mamba_bio_audio.errors import CheckpointError

TOKENIZER_FILE = "tokenizer.json"
DATA_FILE = "data_config.json"
TOKENIZER_NAMES = ("dna", "mulaw")


def save_tokenizer(tokenizer, data_cfg=None) -> dict:
    """{file name: text} to write beside a model checkpoint: the tokenizer's settings and the
    `data:` section it was trained with (window length, sample rate: read by predict/generate)."""
    from mamba_bio_audio.config import to_dict

    files = {TOKENIZER_FILE: json.dumps(tokenizer.to_dict(), indent=2) + "\n"}
    if data_cfg is not None:
        files[DATA_FILE] = json.dumps(to_dict(data_cfg), indent=2) + "\n"
    return files


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


def load_data_config(model_dir) -> dict:
    """The `data:` settings saved with a model folder of any format ({} when there are none)."""
    from mamba_bio_audio.models.convert import checkpoint_format

    return folder_extras(model_dir, checkpoint_format(model_dir) or "ours").get("data_config", {})


def load_tokenizer(model_dir, name: str = None):
    """The tokenizer of a model folder: `name` (dna|mulaw, `--tokenizer`) if given, else the
    folder's own.

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
    if tokenizer is None and fmt == "ours":
        raise CheckpointError(f"{model_dir}: {TOKENIZER_FILE} is missing; is this a checkpoint "
                              "written by mamba-bio-audio?")
    if tokenizer is None:
        what = {"hf": "a Hugging Face", "mamba_ssm": "a mamba_ssm"}[fmt]
        raise CheckpointError(f"{model_dir}: {what} checkpoint carries no tokenizer of ours "
                              f"({TOKENIZER_FILE}); name one with --tokenizer "
                              f"{'|'.join(TOKENIZER_NAMES)}")
    return mdata.tokenizer_from_dict(tokenizer)


def modality(data_cfg: dict, tokenizer) -> str:
    """"audio" or "dna": from the data kind saved with a model (data_config.json), else (a
    checkpoint from elsewhere) from its tokenizer. Decided here once for every command."""
    from .run_config import AUDIO_KINDS

    kind = data_cfg.get("kind")
    if kind is not None:
        return "audio" if kind in AUDIO_KINDS else "dna"
    return "dna" if tokenizer.type_name == "dna_char" else "audio"


def load_frontend(tokenizer, data_cfg: dict):
    """The audio front-end a model was trained with: its tokenizer and the sample rate saved in
    its data settings (`DEFAULT_SAMPLE_RATE` for a checkpoint that names none)."""
    from mamba_bio_audio.data import AudioFrontEnd

    from .run_config import DEFAULT_SAMPLE_RATE

    return AudioFrontEnd(tokenizer, int(data_cfg.get("sample_rate", DEFAULT_SAMPLE_RATE)))


def named_tokenizer(name: str):
    from mamba_bio_audio import data as mdata

    return mdata.DNATokenizer() if name == "dna" else mdata.MuLaw()


def add_tokenizer_argument(parser) -> None:
    parser.add_argument("--tokenizer", default=None, choices=TOKENIZER_NAMES,
                        help="the tokenizer of a checkpoint from elsewhere (which has none of "
                             "ours): dna (12 ids) or mulaw (256 levels)")


def rc_model_fields(model_cfg, tokenizer) -> dict:
    """MambaConfig fields that an RC-equivariant model takes from the data's tokenizer (its
    complement map); {} for other models."""
    if not model_cfg.rc_equivariant:
        return {}
    return {"rc_equivariant": True, "complement": tokenizer.complement_ids}


MAKERS = {"MambaLM": "a language model (from `pretrain` or `finetune`)",
          "MambaClassifier": "a classifier (from `classify`)"}


def model_folder(path: str | Path, option: str = "--model", want: str | None = None) -> Path:
    """The model folder that `path` names: a checkpoint folder (config.json), or a run folder
    (its checkpoints/best, else checkpoints/last). CheckpointError when it is neither, or when
    it holds one of our models other than `want` ("MambaLM" or "MambaClassifier")."""
    path = Path(path)
    found = next((p for p in (path, path / "checkpoints" / "best", path / "checkpoints" / "last")
                  if (p / "config.json").is_file()), None)
    if found is not None:
        if want is not None:
            _check_kind(found, option, path, want)
        return found
    if not path.exists():
        raise CheckpointError(f"{option} {path}: no such folder; expected a run folder "
                              "(runs/X) or a checkpoint folder (runs/X/checkpoints/best)")
    if not path.is_dir():
        raise CheckpointError(f"{option} {path}: is a file; expected a run folder (runs/X) or a "
                              "checkpoint folder (runs/X/checkpoints/best)")
    raise CheckpointError(f"{option} {path}: config.json is missing; expected a run folder "
                          "(runs/X) or a checkpoint folder (runs/X/checkpoints/best)")


def _check_kind(folder: Path, option: str, given: Path, want: str) -> None:
    try:
        kind = json.loads((folder / "config.json").read_text()).get("model_type")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return  # the loader names the broken file
    if kind in MAKERS and kind != want:
        raise CheckpointError(f"{option} {given}: holds {MAKERS[kind]} ({kind}); this command "
                              f"needs {MAKERS[want]} ({want})")
