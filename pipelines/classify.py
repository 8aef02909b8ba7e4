"""`mamba-bio-audio classify`: fine-tune a Mamba classifier on species, labeled sequences or clips.

Setup (config, datasets, model from scratch or from a pretrained LM with `--init DIR`), train (the
shared `Trainer`, best checkpoint by validation accuracy), save (summary.json with test accuracy,
macro F1, MCC and the confusion matrix, beside a simple baseline on the same split; a
confusion-matrix PNG).

    mamba-bio-audio classify                                  # bundled bacterial species, 1,024 bp
    mamba-bio-audio classify --config classify_splice         # UCI splice junctions
    mamba-bio-audio classify --config classify_digits         # spoken digits (FSDD)
    mamba-bio-audio classify --init runs/pretrain-X/checkpoints/best
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path

import numpy as np

from mamba_bio_audio.errors import ConfigError

from .common.figures import figure
from .common.model_files import model_folder, rc_model_fields, save_tokenizer
from .common.outputs import write_summary
from .common.runs import add_run_arguments, resolve_run, save_run_config


def add_arguments(parser) -> None:
    add_run_arguments(parser, "classify")
    parser.add_argument("--init", default=None, metavar="DIR",
                        help="start from this pretrained LM: a run folder of `pretrain` or a "
                             "checkpoint folder (sets `init`)")
    parser.add_argument("--no-baseline", "--no-baselines", action="store_true", dest="no_baseline",
                        help="skip the baseline (k-mer or MFCC features + logistic regression)")


def build_model(cfg, data):
    """A classifier from scratch (cfg.model) or on the backbone of the LM checkpoint cfg.init."""
    from mamba_bio_audio.models import MambaClassifier, MambaLM

    n = len(data.class_names)
    feature_dim = getattr(data.tokenizer, "feature_dim", 0)  # > 0: float frames (log-mel)
    if cfg.init:
        from mamba_bio_audio.errors import CheckpointError

        if feature_dim:
            raise CheckpointError(f"--init {cfg.init}: a pretrained LM reads token ids, but "
                                  f"data.features={cfg.data.features} gives float frames; use "
                                  "data.features=waveform")
        model_folder(cfg.init, "--init", want="MambaLM")
        lm = MambaLM.from_pretrained(cfg.init, vocab_size=data.tokenizer.vocab_size)
        if lm.config.vocab_size != data.tokenizer.vocab_size:
            raise CheckpointError(f"--init {cfg.init}: its vocabulary ({lm.config.vocab_size}) "
                                  f"does not match the data's ({data.tokenizer.vocab_size})")
        # model.rc_equivariant=true turns a plain LM's backbone into an RC one (same weights)
        return MambaClassifier.from_lm(lm, n, cfg.model.pooling, data.class_names,
                                       **rc_model_fields(cfg.model, data.tokenizer))
    inputs = ({"input_dim": feature_dim} if feature_dim
              else {"input_dim": 0, "vocab_size": data.tokenizer.vocab_size,
                    **rc_model_fields(cfg.model, data.tokenizer)})
    model_cfg = dataclasses.replace(cfg.model, n_classes=n, class_names=list(data.class_names),
                                    **inputs)
    return MambaClassifier(model_cfg)


def main(args) -> int:
    cfg, run_dir, resume = resolve_run(args, "classify")  # before torch: fast errors
    if cfg.train.fsdp:  # the test predictions run on rank 0 alone, which a sharded model cannot
        raise ConfigError("train.fsdp=true is for the LM commands (pretrain, finetune); "
                          "classifiers train replicated (train.fsdp=false)")
    return run(cfg, run_dir, resume, args)


def run(cfg, run_dir, resume, args) -> int:
    """Setup, train, save (see the module docstring); returns the exit status."""
    from .common.datasets import classification_datasets
    from .training.distributed import is_main_process, log
    from .training.losses import classifier_loss
    from .training.trainer import Trainer

    t0 = time.perf_counter()
    if args.init:
        cfg.init = str(model_folder(args.init, "--init"))
    data = classification_datasets(cfg.data)
    model = build_model(cfg, data)
    cfg.model = model.config
    if is_main_process():
        run_dir = save_run_config(cfg, run_dir, args)
    log(f"classify: {len(data.class_names)} classes ({', '.join(map(str, data.class_names))}), "
        f"{len(data.train)} train / {len(data.val)} val / {len(data.test)} test items of "
        f"{cfg.data.seq_len} {'frames' if model.config.input_dim else 'tokens'}, "
        f"{model.num_parameters() / 1e6:.2f}M parameters"
        f"{', from ' + cfg.init if cfg.init else ''}; run folder {run_dir}")

    trainer = Trainer(model, classifier_loss, data.train, data.val, cfg.train, run_dir,
                      extra_files=save_tokenizer(data.tokenizer, cfg.data))
    result = trainer.fit(resume=resume)
    trainer.restore_best()
    if not is_main_process():
        return 0
    summary = test_summary(trainer, data, cfg)
    summary.update({
        "init": cfg.init,
        "steps": result.step,
        "tokens_seen": result.tokens_seen,
        "tokens_per_second": result.tokens_per_second,
        "train_wall_seconds": result.wall_seconds,
    })
    if cfg.baseline and not args.no_baseline:
        log("fitting the baseline ...")
        summary["baseline"] = baseline(data, len(data.class_names))
    summary["checkpoint"] = str(result.best_dir or result.last_dir)
    summary["wall_seconds"] = time.perf_counter() - t0
    plot_confusion(np.array(summary["confusion_matrix"]), summary["classes"],
                   run_dir / "confusion_matrix.png")  # its title gives the accuracy
    write_summary(run_dir, summary)
    print(report(summary, run_dir))
    return 0


def test_summary(trainer, data, cfg) -> dict:
    """The trained model on the test set: accuracy, macro F1, MCC, confusion matrix (and, for
    DNA, how many calls flip on the reverse complement)."""
    from .common.baselines import classification_metrics
    from .common.inference import predict_proba, rc_flip_fraction

    batch_size = cfg.train.eval_batch_size or cfg.train.batch_size
    probs, labels = predict_proba(trainer.raw_model, data.test, batch_size, trainer.device,
                                  cfg.train.progress, desc="test",
                                  rc_tokenizer=data.tokenizer if cfg.data.rc_test else None)
    metrics = classification_metrics(labels, probs.argmax(1), len(data.class_names))
    summary = {
        "command": "classify",
        "data": cfg.data.kind,
        "classes": [str(c) for c in data.class_names],
        "test_items": len(labels),
        "test_accuracy": metrics["accuracy"],
        "test_macro_f1": metrics["macro_f1"],
        "test_mcc": metrics["mcc"],
        "test_reverse_complement_averaged": cfg.data.rc_test,
        "rc_equivariant": trainer.raw_model.config.rc_equivariant,
        "confusion_matrix": metrics["confusion_matrix"],
    }
    if data.modality == "dna":  # calls of single strands (before any rc_test averaging)
        summary["test_rc_flip_fraction"] = rc_flip_fraction(
            trainer.raw_model, data.test, batch_size, trainer.device, data.tokenizer)
    return summary


def baseline(data, n_classes: int, max_train: int = 6000) -> dict:
    """k-mer counts + logistic regression (DNA) or MFCC statistics + logistic regression (audio),
    trained on (up to `max_train`) training items of epoch 0 and scored on the same test items."""
    from .common.baselines import kmer_logistic_regression, mfcc_logistic_regression

    train_n = min(len(data.train), max_train)
    if hasattr(data.train, "set_epoch"):
        data.train.set_epoch(0)
    if hasattr(data.train, "set_seq_len"):  # the test windows' length, not the last stage's
        data.train.set_seq_len(data.test.seq_len)
    if data.modality == "audio":
        return mfcc_logistic_regression(data.train.waves, data.train.labels, data.test.waves,
                                        data.test.labels, n_classes, data.extra["sample_rate"])
    train_items = [data.train[i] for i in range(train_n)]
    test_items = [data.test[i] for i in range(len(data.test))]
    unpad = lambda it: it["ids"][it["mask"]].numpy()  # noqa: E731
    return kmer_logistic_regression([unpad(it) for it in train_items],
                                    [it["label"] for it in train_items],
                                    [unpad(it) for it in test_items],
                                    [it["label"] for it in test_items], n_classes)


def plot_confusion(cm: np.ndarray, names: list, path: Path) -> None:
    """Confusion matrix (rows: true class, columns: predicted) as a PNG, written atomically,
    titled with the accuracy it shows."""
    size = 2.5 + 0.45 * len(names)
    with figure(path, figsize=(size, size)) as (fig, ax):
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        correct, total = int(np.trace(cm)), int(cm.sum())
        ax.set_title(f"test accuracy {correct / max(total, 1):.4f} ({correct} of {total})")
        for i, j in itertools.product(range(len(names)), repeat=2):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)


def report(s: dict, run_dir) -> str:
    lines = [f"classify finished: {s['steps']} steps, {s['wall_seconds']:.0f} s in all",
             f"  test ({s['test_items']} items)  model: accuracy {s['test_accuracy']:.4f}  "
             f"macro F1 {s['test_macro_f1']:.4f}  MCC {s['test_mcc']:.4f}"]
    if "test_rc_flip_fraction" in s:
        lines.append(f"  calls that flip when a test sequence is reverse-complemented (one strand "
                     f"scored): {s['test_rc_flip_fraction']:.4f}")
    if "baseline" in s:
        b = s["baseline"]
        lines.append(f"  baseline ({b['name']}): accuracy {b['accuracy']:.4f}  "
                     f"macro F1 {b['macro_f1']:.4f}  MCC {b['mcc']:.4f}")
    lines.append(f"  summary: {run_dir}/summary.json")
    return "\n".join(lines)
