"""`mamba-bio-audio evaluate-audio`: SC09-style scores of an audio LM's unconditional samples.

    mamba-bio-audio classify --config classify_digits --out runs/digits
    mamba-bio-audio pretrain --config pretrain_fsdd_unet --out runs/fsdd-unet        # a GPU
    mamba-bio-audio evaluate-audio --model runs/fsdd-unet --classifier runs/digits --n 512

The LM generates `--n` clips of its training clip length, one silence token first and then step
by step (recurrent mode, in batches; replayed from CUDA graphs on a GPU). A spoken-digit
classifier scores three sets against a reference set, the classifier's held-out test clips:

- the generated clips;
- real clips that neither model trained on, the classifier's validation split: the ceiling;
- white noise: the floor.

Every clip is made as the LM makes one: peak-normalised, mu-law quantised and padded with
silence (or cropped) to the clip length; the classifier hears it trimmed of leading and trailing
silence (below -40 dB of its peak), as FSDD's clips are and as it learnt them. The scores
(`mamba_bio_audio.sample_metrics`) are FID between the classifier's features (the input of its
last layer), IS, modified IS and AM; NLL is the LM's bits per sample on its own held-out test
split, over the clips' own samples (padding left out). summary.json holds them all, with the
classifier's accuracy on the real sets as presented here and the counts of the digits it hears
in each set; samples.png shows a few generated clips (waveform and spectrogram), sample_<i>.wav
lets you listen to them.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mamba_bio_audio.errors import CheckpointError

from .common.arguments import _number, non_negative_int, positive_float, positive_int
from .common.model_files import (load_data_config, load_frontend, load_tokenizer, modality,
                                 model_folder)
from .common.outputs import check_new_run_dir, make_output_dir, write_output, write_summary
from .common.runs import default_run_dir
from .training.device import resolve_device


def at_least_two(text: str) -> int:
    """argparse type: an integer >= 2 (a covariance needs two samples)."""
    return _number(text, int, lambda v: v >= 2, "an integer >= 2")


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="audio LM: a run folder of `pretrain` (its best checkpoint) or a "
                             "checkpoint folder")
    parser.add_argument("--classifier", required=True, metavar="DIR",
                        help="spoken-digit classifier: a run folder of `classify --config "
                             "classify_digits` or a checkpoint folder")
    parser.add_argument("--n", type=at_least_two, default=512,
                        help="clips to generate (and of white noise)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: runs/evaluate-audio-<time>)")
    parser.add_argument("--batch-size", type=positive_int, default=256,
                        help="clips generated at once")
    parser.add_argument("--eval-batch-size", type=positive_int, default=32,
                        help="clips per forward pass of the NLL and of the classifier")
    parser.add_argument("--temperature", type=positive_float, default=1.0,
                        help="sampling temperature")
    parser.add_argument("--wavs", type=non_negative_int, default=8,
                        help="generated clips written as WAV")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling and the noise")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda[:N]")


def main(args: argparse.Namespace) -> int:
    from mamba_bio_audio.sample_metrics import sample_scores

    t0 = time.perf_counter()
    if args.out:
        check_new_run_dir(Path(args.out), "evaluate-audio")
    device = resolve_device(args.device)
    lm, lm_frontend, lm_data = load_lm(args.model, device)
    rate, length = lm_frontend.sample_rate, int(lm_data["seq_len"])
    lm_tok = lm_frontend.tokenizer
    clf, clf_frontend, clf_data, real = load_classifier(args.classifier, rate, device)
    bar = {"file": sys.stderr, "disable": None}  # progress bars on a terminal only
    print(f"evaluate-audio: {args.n} clips of {length} samples ({length / rate:.2f} s at "
          f"{rate} Hz) from {args.model}, scored by {args.classifier} on {device}",
          file=sys.stderr)

    nll, nll_samples = held_out_nll(lm, lm_data, args.eval_batch_size, device, bar)
    ids = generate_clips(lm, lm_tok, args.n, length, args.batch_size, args.temperature,
                         args.seed, bar)
    generated = lm_tok.decode(ids).float()  # (n, length)
    noise = torch.randn(args.n, length, generator=torch.Generator().manual_seed(args.seed))
    sets = {"generated": generated,
            "real": as_lm_clips(real.val.waves, lm_frontend, length),
            "noise": as_lm_clips(list(noise), lm_frontend, length)}
    reference = as_lm_clips(real.test.waves, lm_frontend, length)
    labels = {"real": np.array(real.val.labels), "reference": np.array(real.test.labels)}

    def score(waves, name):
        return classifier_outputs(clf, clf_frontend, waves, int(clf_data["seq_len"]),
                                  args.eval_batch_size, device, bar, name)

    ref_features, ref_probs = score(reference, "reference")
    classes = [str(c) for c in (clf.config.class_names or range(clf.config.n_classes))]
    results = {}
    for name, waves in sets.items():
        features, probs = score(waves, name)
        results[name] = {"clips": len(waves),
                         **sample_scores(features, probs, ref_features, ref_probs),
                         "heard_digits": heard(probs, classes)}
        if name in labels:
            results[name]["classifier_accuracy"] = float((probs.argmax(1) == labels[name]).mean())
    results["generated"]["nll_bits_per_sample"] = nll

    from .common.figures import plot_audio

    out_dir = make_output_dir(Path(args.out) if args.out else default_run_dir("evaluate-audio"))
    files = [str(write_wav(out_dir / f"sample_{i}.wav", w, rate))
             for i, w in enumerate(generated[:args.wavs])]
    with np.errstate(divide="ignore"):  # digital silence has no power: -inf dB, drawn as the floor
        files.append(str(plot_audio(list(generated[:6]), rate, out_dir / "samples.png")))
    summary = {
        "command": "evaluate-audio", "model": str(args.model), "classifier": str(args.classifier),
        "sample_rate": rate, "clip_samples": length, "generated_clips": args.n,
        "temperature": args.temperature, "seed": args.seed,
        "nll_bits_per_sample": nll, "nll_test_samples": nll_samples,
        "reference": {"clips": len(reference), "split": "the classifier's test split",
                      "classifier_accuracy": float((ref_probs.argmax(1)
                                                    == labels["reference"]).mean())},
        "scores": results, "files": files, "wall_seconds": time.perf_counter() - t0,
    }
    write_summary(out_dir, summary)
    print(report(summary, out_dir))
    return 0


def load_lm(path, device):
    """(MambaLM, its audio front-end, its data settings) of an audio LM folder."""
    from mamba_bio_audio.models import MambaLM

    folder = model_folder(path, "--model", want="MambaLM")
    tok = load_tokenizer(folder)
    data = load_data_config(folder)
    if modality(data, tok) != "audio":
        raise CheckpointError(f"--model {path}: a DNA LM (its tokenizer is {type(tok).__name__}); "
                              "expected an audio LM (`pretrain --config pretrain_fsdd_unet`)")
    if "seq_len" not in data:
        raise CheckpointError(f"--model {path}: no data_config.json with the clip length; "
                              "expected an LM trained by `pretrain`")
    model = MambaLM.from_pretrained(folder, device=device, vocab_size=tok.vocab_size).eval()
    return model, load_frontend(tok, data), data


def load_classifier(path, rate: int, device):
    """(MambaClassifier, its audio front-end, its data settings, its digit clips) of a classifier
    folder trained on spoken-digit clips at `rate` Hz."""
    from mamba_bio_audio.config import from_dict
    from mamba_bio_audio.models import MambaClassifier

    from .common.datasets import classification_datasets
    from .common.run_config import DataConfig

    folder = model_folder(path, "--classifier", want="MambaClassifier")
    data = load_data_config(folder)
    if data.get("kind") != "digits":
        raise CheckpointError(f"--classifier {path}: a classifier of data.kind="
                              f"{data.get('kind')!r}; expected a spoken-digit classifier "
                              "(`classify --config classify_digits`)")
    if int(data.get("sample_rate", 0)) != rate:
        raise CheckpointError(f"--classifier {path}: hears clips at {data.get('sample_rate')} "
                              f"Hz; expected the LM's rate, {rate} Hz")
    model = MambaClassifier.from_pretrained(folder, device=device).eval()
    clips = classification_datasets(from_dict(DataConfig, data, where=f"{folder}/data_config"))
    return model, load_frontend(load_tokenizer(folder), data), data, clips


@torch.inference_mode()
def held_out_nll(model, data: dict, batch_size: int, device, bar: dict) -> tuple[float, int]:
    """(bits per sample, samples scored) of the LM on its own held-out test split; for whole clips
    (data.kind=digits) over the clips' own samples, the padding left out."""
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from mamba_bio_audio.config import from_dict

    from .common.datasets import lm_datasets
    from .common.run_config import DataConfig

    test = lm_datasets(from_dict(DataConfig, data, where="the LM's data_config")).test
    total, count = 0.0, 0
    for batch in tqdm(DataLoader(test, batch_size=batch_size), desc="NLL of held-out clips",
                      **bar):
        ids = batch["ids"].to(device)
        weight = batch.get("clip_mask", batch["mask"])[:, 1:].to(device).float()
        logits = model(ids)[:, :-1].float()
        nats = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        total += float((nats * weight).sum())
        count += int(weight.sum())
    return total / max(count, 1) / math.log(2), count


def generate_clips(model, tok, n: int, length: int, batch_size: int, temperature: float,
                   seed: int, bar: dict) -> torch.Tensor:
    """(n, length) ids: a silence token, then length - 1 sampled ones, batch_size clips at once."""
    from tqdm.auto import tqdm

    out = []
    with tqdm(total=n * (length - 1), desc="generate", unit="sample", unit_scale=True,
              **bar) as progress:
        for i, start in enumerate(range(0, n, batch_size)):
            b = min(batch_size, n - start)
            prompt = torch.full((b, 1), tok.pad_id, dtype=torch.long)
            out.append(model.generate(prompt, length - 1, temperature, seed=seed + i,
                                      callback=lambda token, t: progress.update(len(token))).cpu())
    return torch.cat(out)


def as_lm_clips(waves, frontend, length: int) -> torch.Tensor:
    """Clips (float waveforms of any length) as the LM makes them, through its audio front-end:
    peak-normalised, mu-law ids padded with silence or cropped to `length` (a whole-clip item,
    `data.clips.clip_ids`), decoded -> (n, length)."""
    from mamba_bio_audio.data.clips import clip_ids

    ids = torch.stack([clip_ids(frontend, frontend.normalise(w), length)[0] for w in waves])
    return frontend.tokenizer.decode(ids).float()


SILENCE_DB = -40.0  # trim_silence: samples this far below a clip's peak are silence


def trim_silence(wave: torch.Tensor, db: float = SILENCE_DB) -> torch.Tensor:
    """The part of a clip (T,) from its first to its last sample louder than `db` below its
    peak (the whole clip when it is silent), as FSDD's clips are trimmed of silence."""
    loud = (wave.abs() > wave.abs().max() * 10 ** (db / 20)).nonzero()
    return wave if len(loud) == 0 else wave[int(loud[0]):int(loud[-1]) + 1]


@torch.inference_mode()
def classifier_outputs(model, frontend, waves: torch.Tensor, seq_len: int, batch_size: int,
                       device, bar: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, d): the input of the classifier's last layer, class probabilities (n, k)) of
    waveforms (n, T). Each clip is trimmed of leading and trailing silence (`trim_silence`: the
    classifier learnt on FSDD's trimmed clips, with the padding masked) and encoded by the
    classifier's front-end (cropped to seq_len); a batch is padded and masked as `predict` does
    (`common.inference.pad_batch`)."""
    from tqdm.auto import tqdm

    from .common.inference import class_probabilities, pad_batch

    captured = []
    hook = model.head.register_forward_hook(lambda m, inputs, out: captured.append(inputs[0]))
    probs = []
    try:
        for start in tqdm(range(0, len(waves), batch_size), desc=f"classify {name}", **bar):
            batch = [(None, frontend.encode(trim_silence(w))[:seq_len], None)
                     for w in waves[start:start + batch_size]]
            ids, mask = pad_batch(batch, frontend.tokenizer.pad_id, model.config)
            probs.append(class_probabilities(model, ids.to(device), mask.to(device)))
    finally:
        hook.remove()
    features = torch.cat(captured).float().cpu().numpy()
    return features, torch.cat(probs).cpu().numpy()


def heard(probs: np.ndarray, classes: list[str]) -> dict:
    """{class: how many clips the classifier assigns to it}."""
    counts = np.bincount(probs.argmax(1), minlength=len(classes))
    return {c: int(k) for c, k in zip(classes, counts)}


def write_wav(path: Path, wave: torch.Tensor, rate: int) -> Path:
    """One clip as a WAV file, written atomically."""
    from mamba_bio_audio.data.audio import write_audio

    return write_output(path, lambda tmp: write_audio(tmp, wave, rate))


ROWS = (("generated", "generated (model)"), ("real", "real, held out (ceiling)"),
        ("noise", "white noise (floor)"))


def report(s: dict, out_dir: Path) -> str:
    lines = [(f"evaluate-audio finished: {s['generated_clips']} clips of {s['clip_samples']} "
              f"samples at {s['sample_rate']} Hz, {s['wall_seconds']:.0f} s in all; reference: "
              f"{s['reference']['clips']} held-out real clips (classifier accuracy "
              f"{s['reference']['classifier_accuracy']:.3f})"),
             f"  {'':26} {'clips':>6} {'NLL':>7} {'FID':>8} {'IS':>7} {'mIS':>10} {'AM':>7}"]
    for key, label in ROWS:
        r = s["scores"][key]
        nll = f"{r['nll_bits_per_sample']:.3f}" if "nll_bits_per_sample" in r else "-"
        lines.append(f"  {label:26} {r['clips']:>6} {nll:>7} {r['fid']:>8.3f} {r['is']:>7.3f} "
                     f"{r['mis']:>10.4g} {r['am']:>7.3f}")
    wavs = f", {out_dir}/sample_0.wav ..." if s["files"][:-1] else ""
    lines += [("  NLL: bits per sample of held-out real clips; FID, AM: lower is better; IS, "
               "mIS: higher is better"),
              f"  summary: {out_dir}/summary.json; samples: {out_dir}/samples.png{wavs}"]
    return "\n".join(lines)
