"""`mamba-bio-audio pretrain`: a causal Mamba LM on a reference genome or on recordings.

Setup (config, datasets, model), train (the shared `Trainer`), save (best checkpoint, summary.json
with test bits per token against order-k Markov baselines fitted on the training split).

    mamba-bio-audio pretrain                                  # bundled yeast genome, CPU minutes
    mamba-bio-audio pretrain --config pretrain_hg38 data.path=hg38.fa.gz
    mamba-bio-audio pretrain data.kind=audio                  # bundled long recordings
    torchrun --nproc_per_node 8 -m mamba_bio_audio.cli pretrain --config pretrain_hg38
"""

from __future__ import annotations

import dataclasses
import math
import time

from .common.model_files import rc_model_fields, save_tokenizer
from .common.outputs import write_summary
from .common.runs import add_run_arguments, resolve_run, save_run_config


def add_arguments(parser) -> None:
    add_run_arguments(parser, "pretrain")
    parser.add_argument("--no-baselines", "--no-baseline", action="store_true",
                        dest="no_baselines",
                        help="skip the Markov baselines (they read the whole training split)")


def main(args) -> int:
    cfg, run_dir, resume = resolve_run(args, "pretrain")  # before torch: fast errors
    return run(cfg, run_dir, resume, args)


def run(cfg, run_dir, resume, args) -> int:
    """Setup, train, save (see the module docstring); returns the exit status."""
    from mamba_bio_audio.models import MambaLM

    from .common.datasets import lm_datasets
    from .training.distributed import is_main_process, log
    from .training.losses import bits, lm_loss
    from .training.metrics import plot_loss_curve
    from .training.trainer import Trainer

    t0 = time.perf_counter()
    data = lm_datasets(cfg.data)
    cfg.model = dataclasses.replace(cfg.model, vocab_size=data.tokenizer.vocab_size,
                                    **rc_model_fields(cfg.model, data.tokenizer))
    if is_main_process():
        run_dir = save_run_config(cfg, run_dir, args)
    model = MambaLM(cfg.model)
    n_params = model.num_parameters()
    log(f"pretrain: {data.modality} LM, {n_params / 1e6:.2f}M parameters, windows of "
        f"{cfg.data.seq_len} tokens; run folder {run_dir}")

    trainer = Trainer(model, lm_loss, data.train, data.val, cfg.train, run_dir,
                      extra_files=save_tokenizer(data.tokenizer, cfg.data))
    result = trainer.fit(resume=resume)
    trainer.restore_best()
    val = trainer.evaluate(data.val, desc="val")
    test = trainer.evaluate(data.test, desc="test")
    if not is_main_process():
        return 0

    summary = {
        "command": "pretrain",
        "data": cfg.data.kind,
        "parameters": n_params,
        "steps": result.step,
        "test_bits_per_token": bits(test["loss"]),
        "val_bits_per_token": bits(val["loss"]),
        "test_tokens": test["weight"],
        "tokens_seen": result.tokens_seen,
        "tokens_per_second": result.tokens_per_second,
        "train_wall_seconds": result.wall_seconds,
    }
    lines = {}
    if not args.no_baselines:
        log("fitting Markov baselines on the training split ...")
        summary["baselines"] = markov_summary(data, cfg.markov_max_order)
        b = summary["baselines"]
        lines[f"best Markov (k={b['markov_best_order']}), test"] = b[
            "markov_best_test_bits_per_token"]
    plot_loss_curve(result.history, run_dir / "loss_curve.png", "bits per token", 1 / math.log(2),
                    lines)  # the trainer's plot in nats, redrawn in the bits printed above
    summary["checkpoint"] = str(result.best_dir or result.last_dir)
    summary["wall_seconds"] = time.perf_counter() - t0
    write_summary(run_dir, summary)
    print(report(summary, run_dir))
    return 0


def markov_summary(data, max_order: int) -> dict:
    """Order-k Markov bits per token: fitted on train, k chosen on val, scored on test."""
    from .common.baselines import markov_baselines

    res = markov_baselines(data.token_streams("train"), data.token_streams("val"),
                           data.token_streams("test"), max_order)
    return {
        "markov_test_bits_per_token": {str(k): v["test_bits_per_token"]
                                       for k, v in res["orders"].items()},
        "markov_best_order": res["best_order"],
        "markov_best_test_bits_per_token": res["test_bits_per_token"],
    }


def report(s: dict, run_dir) -> str:
    lines = [f"pretrain finished: {s['steps']} steps, {s['tokens_seen']:,} tokens, "
             f"{s['tokens_per_second']:,.0f} tokens/s, {s['wall_seconds']:.0f} s in all",
             f"  test bits/token   model {s['test_bits_per_token']:.4f}"]
    if "baselines" in s:
        b = s["baselines"]
        per_k = b["markov_test_bits_per_token"]
        lines.append("  Markov baselines  " + "  ".join(
            f"k={k}: {v:.4f}" for k, v in per_k.items()))
        lines.append(f"  best Markov (k={b['markov_best_order']}, chosen on val): "
                     f"{b['markov_best_test_bits_per_token']:.4f}")
    lines.append(f"  summary: {run_dir}/summary.json")
    return "\n".join(lines)
