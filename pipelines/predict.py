"""`mamba-bio-audio predict`: apply a trained classifier to FASTA, CSV or audio files.

    mamba-bio-audio predict --model runs/classify-X genome.fa --out pred.csv
    mamba-bio-audio predict --model DIR seqs.csv clip1.wav clip2.flac --out pred.csv

FASTA (plain or gzip): windows of the model's length over every record (`--stride`, default the
window length; a last window ends at the record's end), one row per window with record, start,
end and `ambiguous` (the fraction of bases other than A, C, G, T). CSV: one row per line, the
sequence read from column `sequence` (`--column`). Audio: read through the audio front-end saved
with the model (data/frontend.py), so a clip gets the inputs it got in training; one row per clip
when it fits the model's length, else one per window. Every row carries the predicted label and each class's
probability (`p_<class>`).

Beside it, `--summary` (default `<out>.summary.csv`) has one row per record and per file: the
mean class probabilities over its windows and the call, leaving out windows that are mostly
ambiguous bases (counted in `low_quality`).
"""

from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from mamba_bio_audio.errors import DataError, UserError

from .common.arguments import positive_int
from .common.model_files import model_folder

LOW_QUALITY = 0.5  # windows with more than this fraction of ambiguous bases are not summarised


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="classifier: a run folder of `classify` (its best checkpoint) or a "
                             "checkpoint folder")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="FASTA, CSV or audio files")
    parser.add_argument("--out", default="predictions.csv", help="output CSV, one row per window")
    parser.add_argument("--summary", default=None,
                        help="per-record and per-file CSV (default: <out>.summary.csv)")
    parser.add_argument("--seq-len", type=positive_int, default=None,
                        help="window length (default: the length the model was trained on)")
    parser.add_argument("--stride", type=positive_int, default=None,
                        help="window step (default: seq-len)")
    parser.add_argument("--column", default="sequence", help="CSV column holding the sequence")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="windows per forward pass")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda[:N]")


def kind_of(path: Path) -> str:
    """"fasta", "csv" or "audio" from the file name (the suffix lists are the data layer's)."""
    from mamba_bio_audio.data import AUDIO_SUFFIXES, FASTA_SUFFIXES

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
    stride leaves the end uncovered (the data layer's window engine); a sequence shorter than
    `seq_len` is one (padded) window."""
    from mamba_bio_audio.data import tile_starts

    if n <= seq_len:
        return [(0, n)]
    return [(s, s + seq_len) for s in tile_starts(0, n, seq_len, stride, cover=True)]


def scan_fasta(path: Path, seq_len: int, stride: int) -> tuple[int, list[str]]:
    """Check a FASTA before any compute: (number of windows, names of empty records)."""
    from mamba_bio_audio.data.fasta import read_records

    n, empty, records = 0, [], 0
    for name, seq in read_records(path):
        records += 1
        if seq:
            n += len(windows(len(seq), seq_len, stride))
        else:
            empty.append(name)
    if records == len(empty):
        raise DataError(f"{path}: no sequence in any record (expected '>name' lines followed by "
                        "sequence)")
    return n, empty


def fasta_items(path: Path, tok, seq_len: int, stride: int):
    """(row fields, ids, mask) for every window of every non-empty record of a FASTA file (mask
    None: every position is real)."""
    from mamba_bio_audio.data.fasta import read_records

    for name, seq in read_records(path):
        for start, end in windows(len(seq), seq_len, stride) if seq else ():
            piece = seq[start:end]
            ids, unknown = tok.encode(piece, return_unknown=True)
            ambiguous = (unknown + piece.upper().count("N")) / len(piece)
            yield {"record": name, "start": start, "end": end,
                   "ambiguous": f"{ambiguous:.3f}"}, ids, None


def read_csv_rows(path: Path, column: str) -> list[tuple[str, str]]:
    """(name, sequence) per line of a CSV/TSV (a spreadsheet's BOM and CRLF line ends are fine)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a text CSV file ({err})") from None
    dialect = "excel-tab" if path.name.lower().endswith(".tsv") else "excel"
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect)
    reader.fieldnames = [c.strip() for c in reader.fieldnames or []]
    if column not in reader.fieldnames:
        raise DataError(f"{path}: no column {column!r}; columns are {reader.fieldnames} "
                        "(choose one with --column)")
    rows = []
    try:
        for i, row in enumerate(reader):
            seq = (row.get(column) or "").strip()
            if not seq:
                raise DataError(f"{path}, line {reader.line_num}: empty sequence in column "
                                f"{column!r}")
            rows.append((row.get("name") or row.get("id") or str(i), seq))
    except csv.Error as err:
        raise DataError(f"{path}, line {reader.line_num}: malformed CSV ({err})") from None
    if not rows:
        raise DataError(f"{path}: no rows under the header")
    return rows


def csv_items(rows, tok):
    for name, seq in rows:
        ids, unknown = tok.encode(seq, return_unknown=True)
        ambiguous = (unknown + seq.upper().count("N")) / len(seq)
        yield ({"record": name, "start": 0, "end": len(seq), "ambiguous": f"{ambiguous:.3f}"},
               ids, None)


def audio_items(path: Path, frontend, seq_len: int, stride: int):
    """(row fields, inputs, mask) per window of an audio file, through the model's front-end.

    The file is read and encoded whole, as a training clip is (log-mel frames are normalised over
    it), and its positions (samples, or frames) are tiled: a file that fits `seq_len` is one
    window, padded exactly as in training, and the first window of a longer one is what training
    read of it. start/end count samples at the model's sample rate."""
    encoded = frontend.encode(frontend.read(frontend.open(path)))
    hop = frontend.hop_length
    for start, end in windows(len(encoded), seq_len, stride):
        ids, mask = frontend.clip_inputs(encoded[start:end], seq_len)
        yield {"record": path.stem, "start": start * hop, "end": end * hop}, ids, mask


def main(args) -> int:
    from .common.outputs import check_writable, write_output

    out = Path(args.out)
    summary_path = Path(args.summary) if args.summary else out.with_suffix(".summary.csv")
    check_writable(out, "--out")
    check_writable(summary_path, "--summary")
    clf = load_classifier(args)
    paths = [Path(p) for p in args.inputs]
    total, csv_rows = check_inputs(paths, clf, args.column)  # every input before any compute
    print(f"predict: {total or 'the'} windows of {clf.seq_len:,} {clf.unit} from {len(paths)} "
          f"file(s){' (both strands)' if clf.rc_tokenizer is not None else ''} on {clf.device}",
          file=sys.stderr)
    summary = Summary(clf.names)
    start_time = time.perf_counter()
    count = [0]
    write_output(out, lambda tmp: count.__setitem__(
        0, write_predictions(tmp, paths, csv_rows, clf, summary, total, args.batch_size)))
    wall = time.perf_counter() - start_time
    write_output(summary_path, summary.csv_text())
    print(f"predict: {count[0]:,} windows in {wall:.1f} s ({count[0] / max(wall, 1e-9):,.1f} "
          f"windows/s) -> {out}; per record and file -> {summary_path}")
    summary.print_table()
    return 0


def load_classifier(args) -> SimpleNamespace:
    """The classifier of --model and everything saved with it that reading inputs needs:
    tokenizer, modality, the audio front-end, window length and stride, class names."""
    from mamba_bio_audio.models import MambaClassifier

    from .common.model_files import load_data_config, load_frontend, load_tokenizer, modality
    from .training.device import resolve_device

    device = resolve_device(args.device)
    folder = model_folder(args.model, want="MambaClassifier")
    model = MambaClassifier.from_pretrained(folder, device=device).eval()
    tok = load_tokenizer(folder)
    data_cfg = load_data_config(folder)
    seq_len = args.seq_len or data_cfg.get("seq_len")
    if not seq_len:
        raise UserError(f"--model {args.model}: no data_config.json with the window length; "
                        "give --seq-len")
    kind = modality(data_cfg, tok)
    frontend = load_frontend(tok, data_cfg) if kind == "audio" else None
    return SimpleNamespace(
        model=model, tokenizer=tok, modality=kind, frontend=frontend, device=device,
        seq_len=seq_len, stride=args.stride or seq_len, unit=frontend.unit if frontend else "bp",
        rc_tokenizer=tok if data_cfg.get("rc_test") else None,
        names=[str(c) for c in (model.config.class_names or range(model.config.n_classes))])


def check_inputs(paths: list[Path], clf, column: str) -> tuple[int, dict]:
    """Check every input before any compute: (windows counted in FASTA and CSV inputs, the CSV
    rows per CSV file); UserError naming the first file that cannot be used."""
    total, csv_rows = 0, {}
    for p in paths:
        if p.is_dir():
            raise UserError(f"{p}: is a folder; expected a FASTA, CSV or audio file")
        if not p.is_file():
            raise UserError(f"{p}: no such file")
        k = kind_of(p)
        if (k == "audio") != (clf.modality == "audio"):
            raise UserError(f"{p}: {k} input, but the model was trained on "
                            f"{'audio' if clf.modality == 'audio' else 'DNA'}")
        if k == "fasta":
            n, empty = scan_fasta(p, clf.seq_len, clf.stride)
            total += n
            if empty:
                print(f"predict: {p}: {len(empty)} empty record(s) skipped "
                      f"({', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''})",
                      file=sys.stderr)
        elif k == "csv":
            csv_rows[p] = read_csv_rows(p, column)
            total += len(csv_rows[p])
        else:
            clf.frontend.open(p)  # DataError now for a file that cannot be read
    return total, csv_rows


def write_predictions(tmp: Path, paths, csv_rows, clf, summary, total: int,
                      batch_size: int) -> int:
    """Classify every window of every input into the CSV at `tmp`; returns the rows written."""
    from tqdm.auto import tqdm

    count = 0
    bar = tqdm(total=total or None, desc="predict", unit="window", file=sys.stderr,
               disable=None)  # None: a bar on a terminal only
    with open(tmp, "w", newline="") as f, bar:
        writer = None
        for path in paths:
            k = kind_of(path)
            if k == "fasta":
                items = fasta_items(path, clf.tokenizer, clf.seq_len, clf.stride)
            elif k == "csv":
                items = csv_items(csv_rows[path], clf.tokenizer)
            else:
                items = audio_items(path, clf.frontend, clf.seq_len, clf.stride)
            for batch in batched(items, batch_size):
                rows = classify_batch(clf.model, batch, path, clf.names, clf.tokenizer.pad_id,
                                      clf.device, clf.rc_tokenizer)
                if writer is None:
                    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                    writer.writeheader()
                writer.writerows(rows)
                summary.add(rows, by_record=k != "csv")
                count += len(rows)
                bar.update(len(rows))
    return count


def batched(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def classify_batch(model, batch, path: Path, names: list, pad_id: int, device,
                   rc_tokenizer=None) -> list[dict]:
    """Classify a batch of (fields, ids, mask) items (`pad_batch`); return its CSV rows.
    `rc_tokenizer`: average each DNA window with its reverse complement (the model was trained
    with data.rc_test)."""
    import numpy as np
    import torch

    from .common.inference import class_probabilities, pad_batch

    ids, mask = pad_batch(batch, pad_id, model.config)
    with torch.inference_mode():
        probs = class_probabilities(model, ids.to(device), mask.to(device),
                                    rc_tokenizer).cpu().numpy()
    rows = []
    for (fields, _, _), p in zip(batch, probs):
        row = {"file": str(path), **fields, "predicted": names[int(np.argmax(p))]}
        row.update({f"p_{n}": f"{v:.6f}" for n, v in zip(names, p)})
        rows.append(row)
    return rows


class Summary:
    """Mean class probabilities per record and per file over the windows of good quality."""

    def __init__(self, names: list[str]):
        self.names = names
        self.groups: dict = {}  # (file, record) -> [windows, low quality, sums]

    def add(self, rows: list[dict], by_record: bool) -> None:
        for row in rows:
            keys = [(row["file"], "(all)")]
            if by_record:
                keys.append((row["file"], row["record"]))
            low = float(row.get("ambiguous", 0)) > LOW_QUALITY
            for key in keys:
                g = self.groups.setdefault(key, [0, 0, [0.0] * len(self.names)])
                g[0] += 1
                if low:
                    g[1] += 1
                    continue
                for i, n in enumerate(self.names):
                    g[2][i] += float(row[f"p_{n}"])

    def rows(self) -> list[dict]:
        records_per_file: dict = {}
        for file, record in self.groups:
            records_per_file[file] = records_per_file.get(file, 0) + (record != "(all)")
        out = []
        for (file, record), (n, low, sums) in self.groups.items():
            if record != "(all)" and records_per_file[file] == 1:
                continue  # one record: its row is the file's row
            if record == "(all)" and records_per_file[file] == 1:
                record = next(r for f, r in self.groups if f == file and r != "(all)")
            good = n - low
            means = [s / good if good else float("nan") for s in sums]
            call = self.names[max(range(len(means)), key=means.__getitem__)] if good else ""
            out.append({"file": file, "record": record, "windows": n, "low_quality": low,
                        "predicted": call,
                        **{f"p_{c}": f"{m:.4f}" for c, m in zip(self.names, means)}})
        return sorted(out, key=lambda r: (r["file"], r["record"] != "(all)"))

    def csv_text(self) -> str:
        rows = self.rows()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["file"])
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def print_table(self, limit: int = 20) -> None:
        rows = self.rows()
        for row in rows[:limit]:
            best = row["predicted"]
            p = row.get(f"p_{best}", "") if best else ""
            low = f", {row['low_quality']} low-quality" if row["low_quality"] else ""
            print(f"  {row['file']} {row['record']}: {best or 'no call'}"
                  f"{f' (mean p {p})' if best else ''} over {row['windows']:,} windows{low}")
        if len(rows) > limit:
            print(f"  ... {len(rows) - limit} more rows in the summary file")
