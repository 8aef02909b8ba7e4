"""Mamba checkpoints of the ecosystem: Hugging Face and mamba_ssm folders to and from a MambaLM.

Three folder formats hold the same isotropic Mamba LM, told apart by their config.json:

    ours       {"model_type": "MambaLM", ...}             model.safetensors      (pretrained.py)
    hf         {"model_type": "mamba", "hidden_size", ...} model.safetensors, its shards
               (model.safetensors.index.json) or pytorch_model.bin: transformers' MambaForCausalLM
    mamba_ssm  {"d_model", "n_layer", "ssm_cfg", ...}      pytorch_model.bin: MambaLMHeadModel

They compute the same function (embedding, n blocks of x + mixer(RMSNorm(x)), final RMSNorm, LM
head), so a conversion only renames weights and config keys:

    ours                                  hf / mamba_ssm
    backbone.embedding.weight             backbone.embeddings.weight / backbone.embedding.weight
    backbone.body.{i}.mixer.ssm.{conv1d, x_proj, dt_proj, A_log, D}
                                          backbone.layers.{i}.mixer.{...}
    backbone.body.{i}.{norm, mixer.in_proj, mixer.out_proj, norm2, mlp}
                                          backbone.layers.{i}.{...}
    backbone.norm_f.weight, lm_head.weight    the same

Vocabulary: ours and mamba_ssm store the vocabulary and the multiple its rows are padded to;
Hugging Face stores the padded number of rows as `vocab_size`. What cannot be mapped (LayerNorm,
Mamba-2 or attention layers, an activation other than SiLU, a key this module does not know) is
refused with a CheckpointError naming the file, the key and its value. Weights are read with
safetensors or `torch.load(weights_only=True)`, which never runs code from the file.

A folder written in another format carries our model config, tokenizer and data settings in
`mamba_bio_audio.json` (ignored by transformers and mamba_ssm), so that ours -> hf -> ours gives
back the same folder; it is used only while it still describes the folder's config.json.
"""

import json
import pickle
import warnings
from pathlib import Path

import safetensors.torch
import torch

from ..config import MambaConfig, from_dict
from ..errors import CheckpointError, ConfigError
from .lm import MambaLM

FORMATS = ("ours", "hf", "mamba_ssm")
CONFIG_FILE = "config.json"
SIDE_FILE = "mamba_bio_audio.json"
SAFETENSORS = "model.safetensors"
TORCH_BIN = "pytorch_model.bin"
OUR_MODEL_TYPES = ("MambaLM", "MambaClassifier")
# model_type values of other state space models that are not Mamba (v1) LMs
UNSUPPORTED_TYPES = {
    "mamba2": "Mamba-2 layers",
    "falcon_mamba": "Falcon-Mamba (RMS norms inside the mixer)",
    "jamba": "Jamba (attention and MoE layers)",
    "zamba": "Zamba (shared attention layers)",
    "zamba2": "Zamba2 (Mamba-2 and attention layers)",
    "bamba": "Bamba (Mamba-2 and attention layers)",
    "nemotron_h": "Nemotron-H (Mamba-2 and attention layers)",
}

# Hugging Face MambaConfig: key -> (our field or None, its default in transformers)
HF_KEYS = {
    "vocab_size": ("vocab_size", 50280),
    "hidden_size": ("d_model", 768),
    "state_size": ("d_state", 16),
    "num_hidden_layers": ("n_layer", 32),
    "layer_norm_epsilon": ("norm_eps", 1e-5),
    "expand": ("expand", 2),
    "conv_kernel": ("d_conv", 4),
    "use_bias": ("bias", False),
    "use_conv_bias": ("conv_bias", True),
    "residual_in_fp32": ("residual_in_fp32", True),
    "time_step_rank": ("dt_rank", "auto"),
    "tie_word_embeddings": ("tie_embeddings", True),
    "initializer_range": ("initializer_range", 0.1),
    "time_step_scale": ("dt_scale", 1.0),
    "time_step_min": ("dt_min", 0.001),
    "time_step_max": ("dt_max", 0.1),
    "time_step_floor": ("dt_init_floor", 1e-4),
}
# keys that change neither the weights nor the function (initialisation, generation, code paths)
HF_IGNORED = {
    "model_type", "architectures", "dtype", "torch_dtype", "transformers_version",
    "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id",
    "use_cache", "use_mambapy", "use_associative_scan", "time_step_init_scheme",
    "rescale_prenorm_residual", "fused_add_norm", "pad_vocab_size_multiple",
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16",
    "tf_legacy_loss", "pruned_heads", "chunk_size_feed_forward", "is_encoder_decoder",
    "is_decoder", "add_cross_attention", "tie_encoder_decoder", "finetuning_task", "id2label",
    "label2id", "num_labels", "tokenizer_class", "prefix", "task_specific_params",
    "problem_type", "max_length", "min_length", "do_sample", "early_stopping", "num_beams",
    "temperature", "top_k", "top_p", "repetition_penalty", "length_penalty",
}
# keys that old Hugging Face configs copied from mamba_ssm: they must agree with the HF keys
HF_ECHOES = {"d_model": "hidden_size", "n_layer": "num_hidden_layers",
             "d_inner": "intermediate_size"}

# mamba_ssm MambaConfig and its ssm_cfg (Mamba, layer "Mamba1"): key -> default
SSM_TOP_KEYS = {"d_model": 2560, "d_intermediate": 0, "n_layer": 64, "vocab_size": 50277,
                "ssm_cfg": {}, "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True,
                "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8,
                "tie_embeddings": True}
SSM_CFG_KEYS = {"layer": "Mamba1", "d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto",
                "dt_min": 0.001, "dt_max": 0.1, "dt_init": "random", "dt_scale": 1.0,
                "dt_init_floor": 1e-4, "conv_bias": True, "bias": False, "use_fast_path": True}
SSM_MLP_MULTIPLE = 128  # mamba_ssm's GatedMLP rounds its hidden width up to a multiple of 128
SSM_NORM_EPS = 1e-5  # MambaLMHeadModel's RMSNorm epsilon (not a config key)


def read_config_json(directory) -> dict:
    """The parsed config.json of a checkpoint folder (CheckpointError if missing or not JSON)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: missing {CONFIG_FILE}; expected a checkpoint folder "
                              "(ours, Hugging Face MambaForCausalLM or mamba_ssm)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def checkpoint_format(directory):
    """"ours", "hf" or "mamba_ssm" from the folder's config.json; None when there is no readable
    config.json or it is none of them. CheckpointError for the state space models we lack
    (Mamba-2, Jamba, ...)."""
    try:
        data = read_config_json(directory)
    except CheckpointError:
        return None
    model_type = data.get("model_type")
    if model_type in OUR_MODEL_TYPES:
        return "ours"
    if model_type == "mamba":
        return "hf"
    if model_type in UNSUPPORTED_TYPES:
        raise CheckpointError(f"{Path(directory) / CONFIG_FILE}: model_type={model_type!r} "
                              f"({UNSUPPORTED_TYPES[model_type]}) is not supported; expected a "
                              "Mamba (v1) LM, model_type 'mamba'")
    if model_type is None and "d_model" in data and "n_layer" in data:
        return "mamba_ssm"
    return None


def _refuse(where, key, value, expected):
    raise CheckpointError(f"{where}: {key}={value!r}: {expected}")


def _int(where, key, value):
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        _refuse(where, key, value, "expected a positive integer")
    return value


def _our_config(where: str, fields: dict) -> MambaConfig:
    try:
        return from_dict(MambaConfig, fields, where="model")
    except ConfigError as err:
        raise CheckpointError(f"{where}: {err} (mapped from the checkpoint's config)") from None


def vocab_fields(rows: int, vocab_size: int = None, where: str = "") -> dict:
    """vocab_size and pad_vocab_size_multiple of ours for an embedding of `rows` rows, of which
    the first `vocab_size` (default: all) are token ids in use."""
    n = rows if vocab_size is None else vocab_size
    if n > rows:
        raise CheckpointError(f"{where}: the tokenizer has {n} token ids but the model's "
                              f"vocabulary has only {rows} rows")
    if n == rows:
        return {"vocab_size": n, "pad_vocab_size_multiple": 8 if rows % 8 == 0 else 1}
    multiple = 8 if -(-n // 8) * 8 == rows else rows
    return {"vocab_size": n, "pad_vocab_size_multiple": multiple}


def hf_to_config(data: dict, where: str) -> MambaConfig:
    """Our MambaConfig for a Hugging Face MambaConfig dict (config.json); `where` names the file."""
    for key, value in data.items():
        if key in HF_KEYS or key in HF_IGNORED or key in HF_ECHOES or key.startswith("_"):
            continue
        if key == "hidden_act":
            if value != "silu":
                _refuse(where, key, value, "only SiLU ('silu') is supported")
        elif key == "rms_norm":
            if value is not True:
                _refuse(where, key, value, "LayerNorm is not supported, only RMSNorm (true)")
        elif key == "intermediate_size":
            pass  # checked below against expand * hidden_size
        else:
            raise CheckpointError(f"{where}: unknown key {key!r} (value {value!r}); it is not a "
                                  "Mamba (v1) setting this converter can map")
    fields = {ours: data.get(key, default) for key, (ours, default) in HF_KEYS.items()}
    for key in ("vocab_size", "hidden_size", "state_size", "num_hidden_layers", "conv_kernel"):
        fields[HF_KEYS[key][0]] = _int(where, key, fields[HF_KEYS[key][0]])
    expand = fields["expand"]
    if isinstance(expand, float) and expand.is_integer():
        fields["expand"] = int(expand)
    if not isinstance(fields["expand"], int) or isinstance(fields["expand"], bool):
        _refuse(where, "expand", expand, "expected an integer (intermediate_size = expand * "
                "hidden_size)")
    inner = fields["expand"] * fields["d_model"]
    resolved = {"hidden_size": fields["d_model"], "num_hidden_layers": fields["n_layer"],
                "intermediate_size": inner}
    if "intermediate_size" in data and data["intermediate_size"] != inner:
        _refuse(where, "intermediate_size", data["intermediate_size"],
                f"expected expand * hidden_size = {inner}")
    for echo, key in HF_ECHOES.items():
        if echo in data and data[echo] != resolved[key]:
            _refuse(where, echo, data[echo], f"expected {key}={resolved[key]}")
    if fields["dt_rank"] != "auto":
        fields["dt_rank"] = _int(where, "time_step_rank", fields["dt_rank"])
    fields.update(vocab_fields(fields["vocab_size"]))
    return _our_config(where, fields)


def config_to_hf(config: MambaConfig) -> dict:
    """The Hugging Face MambaConfig dict (config.json) of our MambaConfig."""
    _check_exportable(config, "hf")
    if config.mlp_expand > 0:
        raise ConfigError(f"model.mlp_expand={config.mlp_expand}: Hugging Face Mamba has no MLP "
                          "blocks; convert --to mamba_ssm or ours")
    return {
        "architectures": ["MambaForCausalLM"], "model_type": "mamba",
        "vocab_size": config.padded_vocab_size, "hidden_size": config.d_model,
        "state_size": config.d_state, "num_hidden_layers": config.n_layer,
        "layer_norm_epsilon": config.norm_eps, "expand": config.expand,
        "intermediate_size": config.expand * config.d_model, "conv_kernel": config.d_conv,
        "use_bias": config.bias, "use_conv_bias": config.conv_bias, "hidden_act": "silu",
        "residual_in_fp32": config.residual_in_fp32, "time_step_rank": config.dt_rank_for(config.d_model),
        "time_step_scale": config.dt_scale, "time_step_min": config.dt_min,
        "time_step_max": config.dt_max, "time_step_floor": config.dt_init_floor,
        "initializer_range": config.initializer_range,
        "tie_word_embeddings": config.tie_embeddings, "dtype": "float32",
        # no special tokens: transformers' default 0 would end generation at id 0 (a mu-law
        # sample, a DNA [CLS]) and read it as padding in prompts
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
    }


def mamba_ssm_to_config(data: dict, where: str) -> MambaConfig:
    """Our MambaConfig for a mamba_ssm MambaConfig dict (config.json)."""
    for key, value in data.items():
        if key not in SSM_TOP_KEYS:
            raise CheckpointError(f"{where}: unknown key {key!r} (value {value!r}); mamba_ssm's "
                                  f"MambaConfig has {', '.join(SSM_TOP_KEYS)}")
    top = {**SSM_TOP_KEYS, **data}
    ssm = top["ssm_cfg"]
    if not isinstance(ssm, dict):
        _refuse(where, "ssm_cfg", ssm, "expected a mapping of Mamba layer settings")
    if ssm.get("layer", "Mamba1") != "Mamba1":
        _refuse(where, "ssm_cfg.layer", ssm["layer"], "Mamba-2 layers are not supported, only "
                "'Mamba1'")
    for key, value in ssm.items():
        if key not in SSM_CFG_KEYS:
            raise CheckpointError(f"{where}: unknown key 'ssm_cfg.{key}' (value {value!r}); a "
                                  f"Mamba1 layer has {', '.join(SSM_CFG_KEYS)}")
    ssm = {**SSM_CFG_KEYS, **ssm}
    if top["rms_norm"] is not True:
        _refuse(where, "rms_norm", top["rms_norm"], "LayerNorm is not supported, only RMSNorm "
                "(true)")
    if top["attn_layer_idx"] or top["attn_cfg"]:
        key = "attn_layer_idx" if top["attn_layer_idx"] else "attn_cfg"
        _refuse(where, key, top[key], "attention layers are not supported (expected none)")
    d_model = _int(where, "d_model", top["d_model"])
    mlp_expand = 0
    if top["d_intermediate"]:
        hidden = _int(where, "d_intermediate", top["d_intermediate"])
        hidden = -(-hidden // SSM_MLP_MULTIPLE) * SSM_MLP_MULTIPLE
        if hidden % d_model:
            _refuse(where, "d_intermediate", top["d_intermediate"], f"the MLP width (rounded up "
                    f"to {hidden}) must be a multiple of d_model={d_model}")
        if ssm["bias"]:
            _refuse(where, "ssm_cfg.bias", True, "mixer biases with MLP blocks (d_intermediate) "
                    "are not supported: mamba_ssm's MLP has no biases and ours follows bias")
        mlp_expand = hidden // d_model
    vocab = _int(where, "vocab_size", top["vocab_size"])
    multiple = _int(where, "pad_vocab_size_multiple", top["pad_vocab_size_multiple"])
    fields = {
        "d_model": d_model, "n_layer": _int(where, "n_layer", top["n_layer"]),
        "vocab_size": vocab, "pad_vocab_size_multiple": multiple, "mlp_expand": mlp_expand,
        "d_state": ssm["d_state"], "d_conv": ssm["d_conv"], "expand": ssm["expand"],
        "dt_rank": ssm["dt_rank"], "dt_min": ssm["dt_min"], "dt_max": ssm["dt_max"],
        "dt_scale": ssm["dt_scale"], "dt_init_floor": ssm["dt_init_floor"],
        "conv_bias": ssm["conv_bias"], "bias": ssm["bias"],
        "residual_in_fp32": top["residual_in_fp32"], "tie_embeddings": top["tie_embeddings"],
        "norm_eps": SSM_NORM_EPS,
    }
    return _our_config(where, fields)


def config_to_mamba_ssm(config: MambaConfig) -> dict:
    """The mamba_ssm MambaConfig dict (config.json) of our MambaConfig."""
    _check_exportable(config, "mamba_ssm")
    if config.norm_eps != SSM_NORM_EPS:
        raise ConfigError(f"model.norm_eps={config.norm_eps}: mamba_ssm's RMSNorm uses "
                          f"{SSM_NORM_EPS} (not a config key there)")
    hidden = config.mlp_expand * config.d_model
    if hidden % SSM_MLP_MULTIPLE:
        raise ConfigError(f"model.mlp_expand={config.mlp_expand}: mamba_ssm rounds the MLP width "
                          f"{hidden} up to a multiple of {SSM_MLP_MULTIPLE}")
    if hidden and config.bias:
        raise ConfigError("model.bias=True with MLP blocks: mamba_ssm's MLP has no biases")
    ssm_cfg = {"layer": "Mamba1", "d_state": config.d_state, "d_conv": config.d_conv,
               "expand": config.expand, "dt_rank": config.dt_rank, "dt_min": config.dt_min,
               "dt_max": config.dt_max, "dt_scale": config.dt_scale,
               "dt_init_floor": config.dt_init_floor, "conv_bias": config.conv_bias,
               "bias": config.bias}
    return {"d_model": config.d_model, "d_intermediate": hidden, "n_layer": config.n_layer,
            "vocab_size": config.vocab_size, "ssm_cfg": ssm_cfg, "attn_layer_idx": [],
            "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": config.residual_in_fp32,
            "fused_add_norm": True, "pad_vocab_size_multiple": config.pad_vocab_size_multiple,
            "tie_embeddings": config.tie_embeddings}


def _check_exportable(config: MambaConfig, fmt: str) -> None:
    """ConfigError for the parts of our models that the other formats do not have."""
    for ok, key, value, why in (
        (config.backbone == "isotropic", "backbone", config.backbone, "only the isotropic one"),
        (config.selective, "selective", config.selective, "the LTI ablation is ours only"),
        (not config.bidirectional, "bidirectional", config.bidirectional, "causal LMs only"),
        (config.input_dim == 0, "input_dim", config.input_dim, "token ids only"),
        (config.n_classes == 0, "n_classes", config.n_classes, "LMs only"),
    ):
        if not ok:
            raise ConfigError(f"model.{key}={value!r}: cannot be written as {fmt} ({why})")


TO_CONFIG = {"hf": hf_to_config, "mamba_ssm": mamba_ssm_to_config}
FROM_CONFIG = {"hf": config_to_hf, "mamba_ssm": config_to_mamba_ssm}


def their_name(key: str, fmt: str) -> str:
    """The name in format `fmt` of one of our MambaLM state-dict keys."""
    key = key.replace("backbone.body.", "backbone.layers.").replace(".mixer.ssm.", ".mixer.")
    if fmt == "hf":
        key = key.replace("backbone.embedding.", "backbone.embeddings.")
    return key


def _read_weights(directory: Path, fmt: str) -> tuple[dict, Path]:
    """{name: tensor} of a foreign folder and the file it came from."""
    index = directory / f"{SAFETENSORS}.index.json"
    candidates = [directory / SAFETENSORS, index, directory / TORCH_BIN]
    if fmt == "mamba_ssm":
        candidates = [directory / TORCH_BIN, directory / SAFETENSORS]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise CheckpointError(f"{directory}: no weights; expected "
                              f"{' or '.join(p.name for p in candidates)}")
    try:
        if path == index:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            weights = {}
            for shard in shards:
                weights.update(safetensors.torch.load_file(str(directory / shard)))
        elif path.suffix == ".safetensors":
            weights = safetensors.torch.load_file(str(path))
        else:
            weights = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: unreadable weights: it holds objects other than tensors, "
                              "which torch.load(weights_only=True) refuses to build (this never "
                              "runs code from the file)") from None
    except Exception as err:  # noqa: BLE001 (truncated file, not a weights file)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: unreadable weights ({type(err).__name__}: "
                              f"{reason})") from None
    if not isinstance(weights, dict) or not all(isinstance(k, str) and torch.is_tensor(v)
                                                for k, v in weights.items()):
        raise CheckpointError(f"{path}: expected a mapping of weight names to tensors")
    return weights, path


def _theirs_to_ours(model: MambaLM, weights: dict, fmt: str, path: Path) -> dict:
    """Our state dict from a foreign one (checked: every weight present with the right shape,
    nothing left over)."""
    if weights and not any(k.startswith("backbone.") for k in weights):
        weights = {f"backbone.{k}": v for k, v in weights.items()}  # a bare MambaModel
    if fmt == "hf" and "backbone.embedding.weight" in weights:  # accepted by transformers too
        weights["backbone.embeddings.weight"] = weights.pop("backbone.embedding.weight")
    ours, used = {}, set()
    tied = model.config.tie_embeddings
    for key, target in model.state_dict().items():
        name = their_name(key, fmt)
        if tied and key == "lm_head.weight":
            embedding = weights[their_name("backbone.embedding.weight", fmt)]
            if name in weights and not torch.equal(weights[name], embedding):
                raise CheckpointError(f"{path}: {name} differs from the embedding, but the "
                                      "config ties them (tie_embeddings / tie_word_embeddings)")
            used.add(name)
            continue
        if name not in weights:
            raise CheckpointError(f"{path}: missing weight {name!r} (expected by the config)")
        if tuple(weights[name].shape) != tuple(target.shape):
            raise CheckpointError(f"{path}: {name} has shape {tuple(weights[name].shape)}, the "
                                  f"config gives {tuple(target.shape)}")
        ours[key] = weights[name]
        used.add(name)
    extra = sorted(set(weights) - used)
    if extra:
        raise CheckpointError(f"{path}: unexpected weight {extra[0]!r} ({len(extra)} in all); "
                              "the config does not describe it")
    if tied:
        ours["lm_head.weight"] = ours["backbone.embedding.weight"]
    return ours


def read_side_file(directory, fmt: str, config: MambaConfig) -> dict:
    """The side file written with a converted folder: {"model": MambaConfig or None, plus the
    extras ("tokenizer", "data_config")}; {} when absent or when it no longer describes
    `config` (the folder's own config.json, e.g. after a re-save by transformers)."""
    path = Path(directory) / SIDE_FILE
    if not path.is_file():
        return {}
    try:
        side = json.loads(path.read_text())
        saved = from_dict(MambaConfig, side.get("model"), where=str(path))
        same = TO_CONFIG[fmt](FROM_CONFIG[fmt](saved), str(path)) == config
    except (json.JSONDecodeError, AttributeError, ConfigError, CheckpointError) as err:
        warnings.warn(f"{path}: ignored ({err})", stacklevel=2)
        return {}
    if not same:
        warnings.warn(f"{path}: ignored; it describes another model than {CONFIG_FILE}",
                      stacklevel=2)
        return {}
    return {**side, "model": saved}


def foreign_lm(directory, vocab_size: int = None) -> MambaLM:
    """A MambaLM with the weights of a Hugging Face or mamba_ssm folder (on the CPU, fp32).

    Args:
        directory: the folder (config.json + weights).
        vocab_size: the number of token ids in use, if fewer than the vocabulary's rows (a
            tokenizer's size; logits then stop there). Default: the folder's own.
    Raises:
        CheckpointError: the format is none of the two, a config value cannot be mapped, or a
            weight is missing, unexpected or of the wrong shape.
    """
    directory = Path(directory)
    fmt = checkpoint_format(directory)
    if fmt not in TO_CONFIG:
        raise CheckpointError(f"{directory}: not a Hugging Face or mamba_ssm Mamba checkpoint")
    where = str(directory / CONFIG_FILE)
    config = TO_CONFIG[fmt](read_config_json(directory), where)
    config = read_side_file(directory, fmt, config).get("model") or config
    if vocab_size is not None and vocab_size != config.vocab_size:
        config = from_dict(MambaConfig, {**config.to_dict(), **vocab_fields(
            config.padded_vocab_size, vocab_size, where)})
    weights, path = _read_weights(directory, fmt)
    model = MambaLM(config)
    model.load_state_dict(_theirs_to_ours(model, weights, fmt, path), strict=True)
    return model


def save_foreign(model: MambaLM, directory, fmt: str, extras: dict = None) -> Path:
    """Write `model` into `directory` as a Hugging Face ("hf") or mamba_ssm folder.

    Files: config.json; model.safetensors (hf; the tied head omitted, as transformers does) or
    pytorch_model.bin (mamba_ssm: both names of a tied weight, as its load_state_dict needs);
    mamba_bio_audio.json with our config and `extras` (e.g. {"tokenizer": ..., "data_config": ...}).
    Raises ConfigError for a model the format cannot hold.
    """
    directory = Path(directory)
    config = FROM_CONFIG[fmt](model.config)
    weights = {}
    for key, tensor in model.state_dict().items():
        if fmt == "hf" and model.config.tie_embeddings and key == "lm_head.weight":
            continue
        weights[their_name(key, fmt)] = tensor.detach().cpu().float().contiguous()
    if fmt == "mamba_ssm" and model.config.tie_embeddings:
        weights["lm_head.weight"] = weights["backbone.embedding.weight"]
    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "hf":
        safetensors.torch.save_file(weights, str(directory / SAFETENSORS), {"format": "pt"})
    else:
        torch.save(weights, directory / TORCH_BIN)
    side = {"format_version": 1, "model": model.config.to_dict(), **(extras or {})}
    (directory / SIDE_FILE).write_text(json.dumps(side, indent=2) + "\n")
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return directory
