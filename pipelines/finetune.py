"""`mamba-bio-audio finetune`: continue training a pretrained audio LM on your own long recordings.

Setup (the pretrained LM, windows streamed from the recordings on disk: each file is read in
blocks, never whole), train (the shared `Trainer`), save (summary.json with held-out bits per
sample before and after fine-tuning).

    mamba-bio-audio pretrain --config pretrain_audio              # a speech LM on the digits
    mamba-bio-audio finetune --model runs/pretrain-X/checkpoints/best          # bundled recordings
    mamba-bio-audio finetune --model DIR --recordings my_recordings/ train.steps=2000

Each recording is cut by time: the first 80 % trains, the next 10 % validates, the last 10 % is
the held-out test part (`data.split_by=file` holds out whole files instead).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

from mamba_bio_audio.errors import UserError

from .common.model_files import load_data_config, model_folder, save_tokenizer
from .common.outputs import write_output, write_summary
from .common.runs import add_run_arguments, resolve_run, save_run_config


def add_arguments(parser) -> None:
    add_run_arguments(parser, "finetune")
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="the pretrained audio LM: a run folder of `pretrain` (its best "
                             "checkpoint) or a checkpoint folder")
    parser.add_argument("--recordings", default=None, metavar="PATH",
                        help="a folder of WAV/FLAC/... files (default: the bundled recordings)")


def main(args) -> int:
    cfg, run_dir, resume = resolve_run(args, "finetune")  # before torch: fast errors
    return run(cfg, run_dir, resume, args)


def run(cfg, run_dir, resume, args) -> int:
    """Setup, train, save (see the module docstring); returns the exit status."""
    from .common.datasets import lm_datasets
    from .training.distributed import is_main_process, log
    from .training.losses import lm_loss
    from .training.trainer import Trainer

    t0 = time.perf_counter()
    if args.recordings:
        cfg.data.path = args.recordings
    model = pretrained_audio_lm(cfg, args)
    data = lm_datasets(cfg.data)
    if is_main_process():
        run_dir = save_run_config(cfg, run_dir, args)
    log(f"finetune: {args.model} on {cfg.data.path or 'the bundled recordings'} at "
        f"{cfg.data.sample_rate} Hz, {len(data.train)} train windows per epoch, "
        f"{len(data.test)} held-out windows; run folder {run_dir}")

    trainer = Trainer(model, lm_loss, data.train, data.val, cfg.train, run_dir,
                      extra_files=save_tokenizer(data.tokenizer, cfg.data))
    before_file = run_dir / "before.json"
    if resume and before_file.is_file():
        before = json.loads(before_file.read_text())
    else:
        before = held_out_bits(trainer, data, " (before)")
        if is_main_process():
            write_output(before_file, json.dumps(before) + "\n")
    result = trainer.fit(resume=resume)
    trainer.restore_best()
    after = held_out_bits(trainer, data)
    if not is_main_process():
        return 0
    summary = {
        "command": "finetune",
        "model": str(args.model),
        "recordings": str(cfg.data.path or "bundled"),
        "sample_rate": cfg.data.sample_rate,
        "test_bits_per_sample_before": before["test"],
        "test_bits_per_sample_after": after["test"],
        "val_bits_per_sample_before": before["val"],
        "val_bits_per_sample_after": after["val"],
        "test_samples": len(data.test) * cfg.data.seq_len,
        "steps": result.step,
        "tokens_seen": result.tokens_seen,
        "tokens_per_second": result.tokens_per_second,
        "train_wall_seconds": result.wall_seconds,
        "checkpoint": str(result.best_dir or result.last_dir),
        "wall_seconds": time.perf_counter() - t0,
    }
    write_summary(run_dir, summary)
    from .training.metrics import plot_loss_curve
    plot_loss_curve(result.history, run_dir / "loss_curve.png", "bits per sample", 1 / math.log(2),
                    {"pretrained model, test": before["test"]})  # the trainer's plot, in bits
    print(f"finetune finished: {result.step} steps, {summary['wall_seconds']:.0f} s in all\n"
          f"  held-out bits/sample: before {before['test']:.4f}  after {after['test']:.4f}\n"
          f"  summary: {run_dir}/summary.json")
    return 0


def held_out_bits(trainer, data, when: str = "") -> dict:
    """Bits per sample of the current model on the test and validation windows."""
    from .training.losses import bits

    return {"test": bits(trainer.evaluate(data.test, desc=f"test{when}")["loss"]),
            "val": bits(trainer.evaluate(data.val, desc=f"val{when}")["loss"])}


def pretrained_audio_lm(cfg, args):
    """The LM of --model; `cfg.data` takes the sample rate and quantisation it was trained with
    (its data_config.json), so the recordings are read as its training audio was."""
    from mamba_bio_audio.models import MambaLM

    args.model = model_folder(args.model, want="MambaLM")
    saved = load_data_config(args.model)
    if not saved:  # a checkpoint from elsewhere: read as mu-law audio with the run's settings
        saved = {"kind": "recordings", "sample_rate": cfg.data.sample_rate,
                 "mu_law_levels": cfg.data.mu_law_levels}
    if saved.get("kind") not in ("audio", "recordings"):
        raise UserError(f"--model {args.model}: not an audio LM (trained on data.kind="
                        f"{saved.get('kind')!r}); pretrain one with --config pretrain_audio")
    # The recordings are read at the model's sample rate and with its quantisation.
    cfg.data = dataclasses.replace(cfg.data, sample_rate=saved["sample_rate"],
                                   mu_law_levels=saved["mu_law_levels"])
    cfg.init = str(args.model)
    model = MambaLM.from_pretrained(args.model, vocab_size=cfg.data.mu_law_levels)
    if model.config.vocab_size != cfg.data.mu_law_levels:
        raise UserError(f"--model {args.model}: its vocabulary ({model.config.vocab_size} ids) is "
                        f"not the {cfg.data.mu_law_levels} mu-law levels of audio")
    cfg.model = model.config
    if cfg.data.seq_len % model.config.pool_product:
        raise UserError(f"data.seq_len={cfg.data.seq_len} must be a multiple of the model's "
                        f"pooling ({model.config.pool_product})")
    return model
