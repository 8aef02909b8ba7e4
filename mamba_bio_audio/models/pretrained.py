"""What every task model shares: the mamba_ssm weight initialisation and checkpoint save/load.

A checkpoint is a folder:

    config.json          {"model_type": "MambaLM", "format_version": 1, <MambaConfig fields>}
    model.safetensors    the weights (tied tensors stored once)
    <extra files>        e.g. tokenizer.json, written from `save_pretrained(..., extra_files=...)`

Every file is written atomically (temp file + rename), config.json last, so a folder with a
config.json is complete. Other files in the folder (e.g. a trainer's state) are left alone.
"""

import json
import math
from pathlib import Path

import safetensors.torch
import torch
import torch.nn as nn

from ..config import MambaConfig, from_dict
from ..errors import CheckpointError
from ..files import write_atomic

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


def init_weights(model: nn.Module, config: MambaConfig) -> None:
    """Initialise as mamba_ssm's `_init_weights`.

    Linear biases are zeroed (except those flagged `_no_reinit`, the Δ biases), embeddings drawn
    from N(0, initializer_range), and the output projections of residual branches (out_proj,
    fc2) rescaled by 1/sqrt(number of residual branches), as in GPT-2.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.bias is not None:
            if not getattr(module.bias, "_no_reinit", False):
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=config.initializer_range)
    n_residuals = config.n_blocks * (2 if config.mlp_expand > 0 else 1)
    for name, p in model.named_parameters():
        if name.endswith(("out_proj.weight", "fc2.weight")):
            nn.init.kaiming_uniform_(p, a=math.sqrt(5))
            with torch.no_grad():
                p /= math.sqrt(n_residuals)


class PretrainedModel(nn.Module):
    """Base of MambaLM and MambaClassifier: holds `config`; saves and loads checkpoint folders."""

    model_type = "PretrainedModel"

    def __init__(self, config: MambaConfig):
        super().__init__()
        if not isinstance(config, MambaConfig):
            raise TypeError(f"config: expected a MambaConfig, got {type(config).__name__}")
        self.config = config

    def num_parameters(self) -> int:
        """Number of distinct parameters (a tied embedding counts once)."""
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory, extra_files: dict = None) -> Path:
        """Write config.json, model.safetensors and the extra files into `directory`.

        Args:
            directory: folder to write (created if needed; other files in it are kept).
            extra_files: {file name: content} saved beside the model, e.g.
                {"tokenizer.json": tokenizer.to_dict()}; dicts and lists are written as JSON,
                str as text, bytes as is. Read them back with `read_extra(directory, name)`.
        Returns:
            the folder's Path.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in (extra_files or {}).items():
            if name in (CONFIG_FILE, WEIGHTS_FILE) or Path(name).name != name:
                raise ValueError(f"extra_files: {name!r} must be a plain file name other than "
                                 f"{CONFIG_FILE} and {WEIGHTS_FILE}")
            if isinstance(content, (dict, list)):
                content = json.dumps(content, indent=2) + "\n"
            data = content.encode() if isinstance(content, str) else bytes(content)
            write_atomic(directory / name, data)
        write_atomic(directory / WEIGHTS_FILE,
                     lambda p: safetensors.torch.save_model(self, str(p), {"format": "pt"}))
        meta = {"model_type": self.model_type, "format_version": FORMAT_VERSION,
                **self.config.to_dict()}
        write_atomic(directory / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def load_config(cls, directory) -> MambaConfig:
        """The MambaConfig of a checkpoint folder (checking that it holds a `cls` model)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"{directory}: no such checkpoint folder")
        path = directory / CONFIG_FILE
        if not path.is_file():
            raise CheckpointError(f"{directory}: missing {CONFIG_FILE} (a checkpoint folder holds "
                                  f"{CONFIG_FILE} and {WEIGHTS_FILE})")
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path}: not valid JSON ({err})") from None
        model_type = meta.pop("model_type", None)
        meta.pop("format_version", None)
        if model_type != cls.model_type:
            raise CheckpointError(f"{directory} holds a {model_type} checkpoint, not a "
                                  f"{cls.model_type}; load it with {model_type}.from_pretrained")
        return from_dict(MambaConfig, meta, where=str(path))

    @classmethod
    def from_pretrained(cls, directory, device="cpu"):
        """Build the model from a checkpoint folder written by `save_pretrained`.

        Raises:
            CheckpointError: the folder or a file is missing, or it holds another kind of model
                or weights that do not fit the config.
        """
        directory = Path(directory)
        model = cls(cls.load_config(directory))
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise CheckpointError(f"{directory}: missing {WEIGHTS_FILE}")
        try:
            safetensors.torch.load_model(model, str(weights), strict=True, device=str(device))
        except (RuntimeError, safetensors.SafetensorError) as err:
            raise CheckpointError(f"{weights}: weights do not fit the config ({err})") from None
        return model.to(device)

    @staticmethod
    def read_extra(directory, name: str):
        """An extra file saved by `save_pretrained`: parsed JSON for *.json, else bytes.

        Raises:
            CheckpointError: the file is missing.
        """
        path = Path(directory) / name
        if not path.is_file():
            raise CheckpointError(f"{directory}: missing {name}")
        return json.loads(path.read_text()) if name.endswith(".json") else path.read_bytes()
