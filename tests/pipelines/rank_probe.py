"""Run `mamba-bio-audio` (arguments as given) and record, for this rank, what it wrote and read.

    PROBE_WATCH=runs/x PROBE_OUT=probe torchrun --nproc_per_node 2 tests/pipelines/rank_probe.py \
        pretrain --out runs/x ...

Writes `$PROBE_OUT/rank<RANK>.json` with:
    writes: file system changes under $PROBE_WATCH (Python audit events: open for writing, mkdir,
        rename/replace, remove, rmtree, mkdtemp), as [event, path]
    items: the genome windows this rank fetched, as [split, epoch, index]
    modules_alive: torch modules still in memory when the command has returned

Used by test_distributed.py to check that only rank 0 writes and that ranks see disjoint data.
"""

import json
import os
import sys

WATCH = os.path.realpath(os.environ["PROBE_WATCH"])
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
EVENTS = ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "tempfile.mkdtemp")
record = {"writes": [], "items": []}


def watched(path) -> bool:
    try:
        return os.path.realpath(os.fsdecode(path)).startswith(WATCH)
    except (TypeError, ValueError):
        return False


def hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (mode and any(c in mode for c in "wax+")) or (flags or 0) & WRITE_FLAGS
        if writing and watched(path):
            record["writes"].append([event, os.fsdecode(path)])
    elif event in EVENTS and args and watched(args[0]):
        record["writes"].append([event, os.fsdecode(args[0])])


def main() -> int:
    from mamba_bio_audio.data.genome import GenomeWindows

    from mamba_bio_audio import cli

    fetch = GenomeWindows.__getitem__

    def recording_getitem(self, index):
        record["items"].append([self.split, int(getattr(self, "epoch", 0)), int(index)])
        return fetch(self, index)

    GenomeWindows.__getitem__ = recording_getitem
    sys.addaudithook(hook)
    try:
        return cli.main(sys.argv[1:])
    finally:
        import gc

        import torch
        record["modules_alive"] = sum(isinstance(o, torch.nn.Module) for o in gc.get_objects())
        out = os.environ["PROBE_OUT"]
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"rank{os.environ.get('RANK', '0')}.json"), "w") as f:
            json.dump(record, f)


if __name__ == "__main__":
    sys.exit(main())
