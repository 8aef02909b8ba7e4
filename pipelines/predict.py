"""`mamba-bio-audio predict`: apply a trained classifier to FASTA, CSV or audio files.

    mamba-bio-audio predict --model runs/classify-X/checkpoints/best genome.fa --out pred.csv
    mamba-bio-audio predict --model DIR seqs.csv clip1.wav clip2.flac --out pred.csv

FASTA (plain or gzip): windows of the model's length over every record (`--stride`, default the
window length; a last window ends at the record's end), one row per window with record, start, end.
CSV: one row per line, the sequence read from column `sequence` (`--column`). Audio: one row per
clip when it fits the model's length, else one per window. Every row carries the predicted label
and each class's probability (`p_<class>`).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mamba_bio_audio.errors import DataError, UserError

from .tasks import class_probabilities, load_data_config, load_tokenizer
from .trainer import resolve_device

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="classifier checkpoint folder (e.g. runs/classify-X/checkpoints/best)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="FASTA, CSV or audio files")
    parser.add_argument("--out", default="predictions.csv", help="output CSV (default: %(default)s)")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="window length (default: the length the model was trained on)")
    parser.add_argument("--stride", type=int, default=None, help="window step (default: seq-len)")
    parser.add_argument("--column", default="sequence", help="CSV column holding the sequence")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")


def kind_of(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(FASTA_SUFFIXES):
        return "fasta"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith(AUDIO_SUFFIXES):
        return "audio"
    raise UserError(f"{path}: unknown input type; expected FASTA ({', '.join(FASTA_SUFFIXES)}, "
                    f"optionally .gz), CSV/TSV or audio ({', '.join(AUDIO_SUFFIXES)})")


def windows(n: int, seq_len: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) windows of `seq_len` every `stride`, plus one ending at n when the last
    stride leaves the end uncovered; a sequence shorter than `seq_len` is one (padded) window."""
    if n <= seq_len:
        return [(0, n)]
    starts = list(range(0, n - seq_len + 1, stride))
    if starts[-1] + seq_len < n:
        starts.append(n - seq_len)
    return [(s, s + seq_len) for s in starts]


def fasta_items(path: Path, tok, seq_len: int, stride: int):
    """(row fields, ids) for every window of every record of a FASTA file."""
    from Bio import SeqIO

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as handle:
        n_records = 0
        for record in SeqIO.parse(handle, "fasta"):
            n_records += 1
            seq = str(record.seq)
            for start, end in windows(len(seq), seq_len, stride):
                yield {"record": record.id, "start": start, "end": end}, tok.encode(seq[start:end])
    if n_records == 0:
        raise DataError(f"{path}: no FASTA records (expected '>name' lines followed by sequence)")


def csv_items(path: Path, tok, column: str):
    text = path.read_text()
    dialect = "excel-tab" if path.name.lower().endswith(".tsv") else "excel"
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    if reader.fieldnames is None or column not in reader.fieldnames:
        raise DataError(f"{path}: no column {column!r}; columns are {reader.fieldnames} "
                        "(choose one with --column)")
    for i, row in enumerate(reader):
        name = row.get("name") or row.get("id") or str(i)
        yield {"record": name, "start": 0, "end": len(row[column])}, tok.encode(row[column])


def audio_items(path: Path, tok, seq_len: int, stride: int, sample_rate: int):
    """(row fields, ids) per window of an audio file; start/end count samples at sample_rate.

    With a feature front-end (log-mel), `seq_len` and `stride` count frames: each window of
    seq_len * hop_length samples is encoded on its own (as a training clip is) and cropped to
    seq_len frames."""
    from mamba_bio_audio.data.audio import read_audio

    wave, _ = read_audio(path, sample_rate)
    peak = float(wave.abs().max())
    if peak > 0:
        wave = wave / peak  # the training clips were peak-normalised too
    hop = getattr(tok, "hop_length", 1)  # samples per position
    for start, end in windows(len(wave), seq_len * hop, stride * hop):
        encoded = tok.encode(wave[start:end])[:seq_len]
        yield {"record": path.stem, "start": start, "end": end}, encoded


def main(args) -> int:
    from mamba_bio_audio.models import MambaClassifier

    device = resolve_device(args.device)
    model = MambaClassifier.from_pretrained(args.model, device=device).eval()
    tok = load_tokenizer(args.model)
    data_cfg = load_data_config(args.model)
    seq_len = args.seq_len or data_cfg.get("seq_len")
    if not seq_len:
        raise UserError(f"--model {args.model}: no data_config.json with the window length; "
                        "give --seq-len")
    stride = args.stride or seq_len
    rc_tok = tok if data_cfg.get("rc_test") else None
    names = [str(c) for c in (model.config.class_names or range(model.config.n_classes))]
    is_audio = hasattr(tok, "levels") or hasattr(tok, "feature_dim")  # mu-law or log-mel
    paths = [Path(p) for p in args.inputs]
    for p in paths:
        if not p.is_file():
            raise UserError(f"{p}: no such file")
        k = kind_of(p)
        if (k == "audio") != is_audio:
            raise UserError(f"{p}: {k} input, but the model was trained on "
                            f"{'audio' if is_audio else 'DNA'}")

    rows = []
    bar = tqdm(desc="predict", unit="window", disable=not sys.stderr.isatty())
    for path in paths:
        k = kind_of(path)
        if k == "fasta":
            items = fasta_items(path, tok, seq_len, stride)
        elif k == "csv":
            items = csv_items(path, tok, args.column)
        else:
            items = audio_items(path, tok, seq_len, stride, data_cfg.get("sample_rate", 8000))
        batch = []
        for item in items:
            batch.append(item)
            if len(batch) == args.batch_size:
                rows += classify_batch(model, batch, path, names, tok.pad_id, device, rc_tok)
                bar.update(len(batch))
                batch = []
        if batch:
            rows += classify_batch(model, batch, path, names, tok.pad_id, device, rc_tok)
            bar.update(len(batch))
    bar.close()
    write_csv(Path(args.out), rows)
    print(f"predict: {len(rows)} rows from {len(paths)} file(s) -> {args.out}")
    return 0


@torch.no_grad()
def classify_batch(model, batch, path: Path, names: list, pad_id: int, device,
                   rc_tokenizer=None) -> list[dict]:
    """Pad a batch of (fields, ids) to its longest item, classify, return the CSV rows.
    ids are (L,) token ids or (L, n_features) float frames. `rc_tokenizer`: average each DNA
    window with its reverse complement (the model was trained with data.rc_test)."""
    length = max(len(ids) for _, ids in batch)
    length += (-length) % model.config.pool_product  # U-Net lengths must divide the pooling
    first = batch[0][1]
    ids = torch.full((len(batch), length, *first.shape[1:]), pad_id, dtype=first.dtype)
    mask = torch.zeros(len(batch), length, dtype=torch.bool)
    for i, (_, x) in enumerate(batch):
        ids[i, :len(x)] = x
        mask[i, :len(x)] = True
    probs = class_probabilities(model, ids.to(device), mask.to(device), rc_tokenizer).cpu().numpy()
    rows = []
    for (fields, _), p in zip(batch, probs):
        row = {"file": str(path), **fields, "predicted": names[int(np.argmax(p))]}
        row.update({f"p_{n}": f"{v:.6f}" for n, v in zip(names, p)})
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write the rows (atomically: temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["file"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
