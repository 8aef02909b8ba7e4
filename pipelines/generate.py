"""`mamba-bio-audio generate`: sample audio (WAV) or DNA (FASTA) from a trained LM, step by step.

    mamba-bio-audio generate --model runs/finetune-X/checkpoints/best --n 2 --seconds 2
    mamba-bio-audio generate --model DIR --prompt speech.flac --prompt-seconds 0.5 --seconds 2
    mamba-bio-audio generate --model runs/pretrain-X/checkpoints/best --length 2000   # DNA

The prompt (or one token of silence / one base) primes the recurrent state; each new token costs
one `step` of constant time and memory. summary.json records samples per second and the time per
step at the start and at the end, which shows that the cost does not grow with the position.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from mamba_bio_audio.errors import UserError

from .common.arguments import non_negative_int, positive_float, positive_int, probability
from .common.figures import plot_audio
from .common.model_files import (add_tokenizer_argument, load_data_config, load_frontend,
                                 load_tokenizer, modality, model_folder)
from .common.outputs import check_new_run_dir, make_output_dir, write_output, write_summary
from .common.runs import default_run_dir
from .training.device import resolve_device


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="LM: a run folder of `pretrain`/`finetune` (its best checkpoint) or "
                             "a checkpoint folder")
    parser.add_argument("--out", default=None, help="output folder (default: runs/generate-<time>)")
    parser.add_argument("--n", type=positive_int, default=1, help="number of samples")
    parser.add_argument("--seconds", type=positive_float, default=None,
                        help="audio LM: seconds per sample (default: 1)")
    parser.add_argument("--length", type=positive_int, default=None,
                        help="DNA LM: bases per sample (default: 1000)")
    parser.add_argument("--prompt", default=None,
                        help="audio: a recording to continue; DNA: a FASTA whose first record is "
                             "continued")
    parser.add_argument("--prompt-seconds", type=positive_float, default=0.5,
                        help="audio: seconds of the prompt recording to use")
    parser.add_argument("--temperature", type=positive_float, default=1.0,
                        help="sampling temperature (> 0; lower is more conservative)")
    parser.add_argument("--top-k", type=non_negative_int, default=0,
                        help="sample among the k most likely tokens (0: all)")
    parser.add_argument("--top-p", type=probability, default=1.0,
                        help="nucleus sampling: the smallest set of tokens with this total "
                             "probability, in (0, 1] (1: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the sampling")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda[:N]")
    add_tokenizer_argument(parser)


def main(args) -> int:
    from mamba_bio_audio.models import MambaLM

    if args.out:
        check_new_run_dir(Path(args.out), "generate")
    device = resolve_device(args.device)
    args.model = model_folder(args.model, want="MambaLM")
    tok = load_tokenizer(args.model, args.tokenizer)
    vocab = getattr(tok, "vocab_size", None)  # None: float features, not an LM's tokenizer
    model = MambaLM.from_pretrained(args.model, device=device, vocab_size=vocab).eval()
    if model.config.vocab_size != vocab:
        raise UserError(f"--model {args.model}: its vocabulary ({model.config.vocab_size} ids) "
                        f"does not fit the tokenizer ({tok.vocab_size} ids)")
    saved = load_data_config(args.model)
    is_audio = modality(saved, tok) == "audio"
    frontend = load_frontend(tok, saved) if is_audio else None  # the one it was trained with
    rate = frontend.sample_rate if is_audio else None
    unused = "--length" if is_audio and args.length else ("--seconds" if not is_audio and
                                                          args.seconds else None)
    if unused:
        raise UserError(f"{unused}: the model is {'an audio' if is_audio else 'a DNA'} LM; give "
                        f"{'--seconds' if is_audio else '--length'} instead")
    prompt = audio_prompt(args, frontend) if is_audio else dna_prompt(args, tok)
    new = round((args.seconds or 1.0) * rate) if is_audio else (args.length or 1000)
    if new < 1:
        raise UserError("nothing to generate: --seconds/--length gives 0 new tokens")
    prompt_ids = prompt.unsqueeze(0).repeat(args.n, 1)
    # created after the inputs are checked: no empty folders
    out_dir = make_output_dir(Path(args.out) if args.out else default_run_dir("generate"))

    print(f"generate: {args.n} x {new} tokens ({'audio at %d Hz' % rate if is_audio else 'DNA'}) "
          f"after a prompt of {prompt.numel()} tokens", file=sys.stderr)
    out, summary = timed_generation(model, prompt_ids.to(device), new, args)
    summary["model"], summary["modality"] = str(args.model), "audio" if is_audio else "dna"
    generated = out[:, prompt.numel():].cpu()
    wall = summary["wall_seconds"]
    if is_audio:
        summary["sample_rate"] = rate
        summary["samples_per_second"] = summary.pop("tokens_per_second")
        summary["files"] = write_audio_outputs(out.cpu(), tok, rate, out_dir)
    else:
        summary["files"] = [write_fasta(generated, tok, out_dir / "generated.fa")]
        summary["special_tokens_written_as_N"] = int((generated < tok.vocab["A"]).sum())
    write_summary(out_dir, summary)
    rate_key = "samples_per_second" if is_audio else "tokens_per_second"
    print(f"generate finished: {args.n * new:,} tokens in {wall:.1f} s ({summary[rate_key]:,.0f}/s); "
          f"step time {summary['step_ms_start']:.2f} ms at the start, "
          f"{summary['step_ms_end']:.2f} ms at the end\n  files: {file_list(summary['files'])}\n"
          f"  summary: {out_dir}/summary.json")
    return 0


def timed_generation(model, prompt_ids: torch.Tensor, new: int, args) -> tuple[torch.Tensor, dict]:
    """(prompt + `new` sampled tokens per row, the summary's numbers: tokens/s and the median step
    time over the first and the last tenth of the steps)."""
    times, last = [], [time.perf_counter()]

    def on_token(token, i):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    t0 = time.perf_counter()
    out = model.generate(prompt_ids, new, args.temperature, args.top_k, args.top_p, args.seed,
                         on_token)
    wall = time.perf_counter() - t0
    k = max(1, len(times) // 10)
    steps = np.array(times[1:]) if len(times) > 1 else np.array(times)
    n, prompt_tokens = prompt_ids.shape
    return out, {
        "command": "generate", "samples": n, "new_tokens_per_sample": new,
        "prompt_tokens": int(prompt_tokens), "wall_seconds": wall,
        "tokens_per_second": n * new / wall,
        "step_ms_start": 1000 * float(np.median(steps[:k])),
        "step_ms_end": 1000 * float(np.median(steps[-k:])),
        "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
        "seed": args.seed, "files": [],
    }


def audio_prompt(args, frontend) -> torch.Tensor:
    """Ids of the first --prompt-seconds of --prompt, read through the LM's audio front-end as
    its training windows were (the file's peak, the same resampling), or one id of silence."""
    if not args.prompt:
        return torch.tensor([frontend.tokenizer.pad_id])
    from mamba_bio_audio.data import FASTA_SUFFIXES

    if str(args.prompt).lower().removesuffix(".gz").endswith(FASTA_SUFFIXES):
        raise UserError(f"--prompt {args.prompt}: the model is an audio LM; expected a recording "
                        "(WAV, FLAC, ...)")
    src = frontend.open(args.prompt)
    n = min(max(1, round(args.prompt_seconds * frontend.sample_rate)), frontend.length(src))
    return frontend.encode(frontend.read(src, 0, n))


def dna_prompt(args, tok) -> torch.Tensor:
    """Ids of the first record of --prompt (a FASTA), or one random base."""
    if not args.prompt:
        g = torch.Generator().manual_seed(args.seed)
        return torch.tensor([tok.vocab["ACGT"[int(torch.randint(4, (1,), generator=g))]]])
    from mamba_bio_audio.data import FASTA_SUFFIXES
    from mamba_bio_audio.data.fasta import read_records

    if not str(args.prompt).lower().removesuffix(".gz").endswith(FASTA_SUFFIXES):
        raise UserError(f"--prompt {args.prompt}: the model is a DNA LM; expected a FASTA file "
                        f"({', '.join(FASTA_SUFFIXES)}, optionally .gz)")
    seq = next((seq for _, seq in read_records(args.prompt) if seq), None)
    if seq is None:
        raise UserError(f"--prompt {args.prompt}: no FASTA record with sequence")
    return tok.encode(seq)


def write_fasta(ids: torch.Tensor, tok, path: Path) -> str:
    """One record per sample; sampled special tokens (the vocabulary has [PAD], [CLS], ...) are
    written as N, so that every record has the asked length."""
    lines = []
    n_id, first = tok.vocab["N"], tok.vocab["A"]  # ids A..N are the nucleotides
    for i, row in enumerate(ids):
        seq = tok.decode(torch.where(row >= first, row, torch.full_like(row, n_id)))
        lines.append(f">generated_{i} length={len(seq)}")
        lines += [seq[j:j + 80] for j in range(0, len(seq), 80)]
    write_output(path, "\n".join(lines) + "\n")
    return str(path)


def file_list(files: list[str], show: int = 3) -> str:
    """The written files for the console: all of a few, else the first ones, the last and a count
    (summary.json lists every one)."""
    if len(files) <= show + 1:
        return ", ".join(files)
    return f"{', '.join(files[:show])}, ..., {files[-1]} ({len(files)} files)"


def write_audio_outputs(ids: torch.Tensor, tok, rate: int, out_dir: Path) -> list[str]:
    """One WAV per sample (prompt included) and a waveform + spectrogram PNG of all of them."""
    from mamba_bio_audio.data.audio import write_audio

    files = []
    waves = [tok.decode(row).float() for row in ids]
    for i, w in enumerate(waves):
        files.append(str(write_audio(out_dir / f"sample_{i}.wav", w, rate)))
    files.append(str(plot_audio(waves, rate, out_dir / "samples.png")))
    return files
